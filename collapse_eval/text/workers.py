"""Policy chains in worker processes (``jobs > 1``): after generation 0 the (seed, policy)
chains are independent, so each runs in a spawned process of its own (never forked: torch),
rebuilding the run's setup from its folder; the parent watches the generations finish."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from collapse_eval.loop import config_hash
from collapse_eval.policies import Policy, parse_policies
from collapse_eval.process_pool import run_in_pool
from collapse_eval.text.chain import Chain, RunSetup, first_model
from collapse_eval.text.config import config_from_dict
from provenance.devices import torch_threads
from provenance.errors import (
    LMWorkerError,
    TailguardError,
    one_line_warnings,
    one_line_warnings_active,
)


def run_in_workers(setup: RunSetup, policies: list[Policy], ledger: Any, bar: Any, jobs: int,
                   threads: int,
                   log: Callable[[int, str | None, int], None] | None = None) -> int:
    """Train each seed's generation 0 here, then run the chains ``jobs`` at a time in spawned
    worker processes; returns the generations that were already complete. ``log(seed, policy,
    generation)`` hears of each generation finished here or in a worker."""
    config, generations = setup.config, setup.config.generations
    chains = [Chain(setup, seed, policy, ledger, None)
              for seed in config.seeds for policy in policies]
    resumed = 0
    for seed in config.seeds:
        shared = Chain(setup, seed, None, ledger, setup.watermark_key(seed))
        resumed += shared.completed(0)
        first_model(shared, bar, load=False, log=log)
    done = [max(1, chain.completed(generations)) - 1 for chain in chains]
    resumed += sum(done)
    bar.update(sum(done))
    todo = longest_first([(chain.policy, done[i]) for i, chain in enumerate(chains)],
                         generations)
    if not todo:
        return resumed
    workers = min(jobs, len(todo))
    bar.set_description(f"lm {len(todo)} chains, {workers} at once")
    base = {"config": config.as_dict(), "out": str(setup.out), "device": setup.device,
            "threads": threads, "one_line_warnings": one_line_warnings_active()}

    def poll() -> None:
        for i, chain in enumerate(chains):  # the bar moves with each finished generation
            now = max(1, chain.completed(generations)) - 1
            bar.update(max(0, now - done[i]))
            if log is not None:
                for generation in range(done[i] + 1, now + 1):
                    log(chain.seed, chain.policy.name, generation)
            done[i] = max(done[i], now)

    tasks = [{**base, "seed": chains[i].seed, "policy": chains[i].policy.name} for i in todo]
    run_in_pool(_chain_worker, tasks, workers, poll=poll,
                failed=lambda k, error: _worker_error(chains[todo[k]], error))
    return resumed


def longest_first(chains: list[tuple[Policy, int]], generations: int) -> list[int]:
    """Indices of the unfinished chains, ``(policy, generations done)``, the costliest first.

    Handing the longest job out first keeps a pool from ending on one long chain while the
    other workers idle. ``accumulate`` trains on one more corpus each generation, so generation
    ``g`` costs about ``g + 1`` fixed-size ones; every other policy's generations cost alike.
    Ties keep the policies' order.

    Examples
    --------
    >>> from collapse_eval.policies import parse_policies
    >>> replace, accumulate, scrape = parse_policies(["replace", "accumulate", "scrape"])
    >>> longest_first([(replace, 0), (accumulate, 0), (scrape, 10)], generations=10)
    [1, 0]
    """
    def cost(policy: Policy, done: int) -> int:
        ahead = range(done + 1, generations + 1)
        return sum(g + 1 for g in ahead) if policy.strategy == "accumulate" else len(ahead)

    costs = [cost(policy, done) for policy, done in chains]
    return sorted((i for i, c in enumerate(costs) if c > 0), key=lambda i: -costs[i])


def _worker_error(chain: Chain, error: BaseException) -> LMWorkerError:
    """The parent's error for a chain that failed in its worker: the policy, the worker's
    exception and, for an unexpected one, the worker's traceback."""
    name, seed = chain.policy.name, chain.seed
    kept = "finished generations are kept: continue with --resume once the cause is fixed"
    if isinstance(error, BrokenProcessPool):
        message = (f"lm policy {name} (seed {seed}): a worker process died (killed, or out of "
                   f"memory? each worker holds about 1 GB: lower --jobs); {kept}")
    else:
        message = (f"lm policy {name} (seed {seed}) failed in its worker process: "
                   f"{type(error).__name__}: {error}; {kept}")
    # The worker's traceback (concurrent.futures attaches it as the cause), unless the error is
    # one tailguard raised on purpose, whose message says it all.
    remote = str(error.__cause__ or "").strip().strip("'\"").strip()
    if remote and not isinstance(error, TailguardError):
        message += f"\nworker traceback:\n{remote}"
    return LMWorkerError(message, policy=name, seed=seed)


#: A worker's setup, rebuilt once per process (the pool hands a process several chains).
_WORKER_SETUP: dict[tuple[str, str, str], RunSetup] = {}


def _chain_worker(task: dict[str, Any]) -> None:
    """In a worker process: run one (seed, policy) chain's remaining generations.

    ``task`` is plain data (the config as a dict, the run folder, device, threads, seed and
    policy name). The setup is rebuilt from the run folder without writing to it (the corpus
    split and chunking are deterministic, the tokenizer is the one saved there), the
    generation-0 model is loaded from disk, and the run ledger is opened by this process.
    """
    from collapse_eval.text.model import load_model
    from provenance.ledger import Ledger

    config = config_from_dict(task["config"])
    out, device, seed = Path(task["out"]), task["device"], int(task["seed"])
    policy = parse_policies([task["policy"]])[0]
    shown = one_line_warnings() if task.get("one_line_warnings") else contextlib.nullcontext()
    with shown, torch_threads(int(task["threads"])):
        key = (str(out), config_hash(task["config"]), device)
        setup = _WORKER_SETUP.get(key)
        if setup is None:
            _WORKER_SETUP.clear()
            setup = _WORKER_SETUP[key] = RunSetup(config, out, device, write=False)
        with Ledger(out / "ledger.sqlite") as ledger:
            chain = Chain(setup, seed, policy, ledger, setup.watermark_key(seed))
            try:
                first = load_model(chain.generation_dir(0) / "model", device=device)
                for generation in range(max(1, chain.completed(config.generations)),
                                        config.generations + 1):
                    chain.step(generation, first)
            finally:
                chain.close()
