"""Work in worker processes, shared by the chains of a collapse run
(:mod:`collapse_eval.engine`) and the benchmark's families (:mod:`collapse_eval.bench`).

Workers are never forked from the caller (a forked torch can deadlock). Where the platform has
it (Linux, macOS), they are forked from a *fork server*: a fresh process, started once per
caller, that imports torch, transformers' GPT-2 and tailguard's engines before it serves its
first worker, so a worker starts in a fraction of a second instead of importing them again
(about 8 s of one core each on a 2-core VM, ``benchmarks/bench_worker_start.py``). Elsewhere
(Windows, or a sandbox where the server cannot start) they are spawned. Either way a worker
runs with the caller's environment variables and working directory as they are when its pool
starts, and imports the caller's main module: :func:`refuse_while_importing_main` stops a script
that starts its pool at import time before it touches a run folder.

:func:`run_in_pool` hands the tasks out in the order given, lets the caller look at the run
folders between finishes (the progress bar), and on the first failure, an interrupt or a SIGTERM
stops every worker before it raises, so nothing runs on behind the caller's back. Whatever the
workers write goes through the run folders' atomic writes: a generation cut short has no
completion record, and a resume runs it again.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from provenance.errors import ConfigError

__all__ = ["POLL_SECONDS", "exit_on_sigterm", "refuse_while_importing_main", "run_in_pool",
           "start_worker_server"]

#: Seconds between looks at the workers' run folders (the progress bar).
POLL_SECONDS = 2.0
#: What the fork server imports once, so that its workers do not (a module missing here is
#: skipped): together about 8 s of one core on a 2-core VM, 5 s of it transformers' GPT-2.
PRELOAD = ("numpy", "polars", "torch", "transformers.models.gpt2.modeling_gpt2",
           "collapse_eval.engine", "collapse_eval.bench")


def worker_context() -> Any:
    """The multiprocessing context of the workers, its fork server started: one that has
    imported :data:`PRELOAD`, where the platform has one and it starts; else spawn (a
    sandbox that forbids the server's Unix socket still runs its pools, only slower)."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # read when the server starts, once
    try:
        forkserver.ensure_running()
    except OSError:
        return multiprocessing.get_context("spawn")
    return context


def start_worker_server() -> None:
    """Start the fork server now (where there is one), so that its imports overlap the
    caller's own work before the first pool (a collapse run's shared generation 0)."""
    worker_context()


def _start_worker(environ: dict[str, str], then: Callable[[], None] | None) -> None:
    """A worker's first step: the caller's environment as the pool started (a worker forked
    from the fork server would otherwise have the server's), then ``then``. The caller's
    folder needs no handing over: multiprocessing's preparation data carries it."""
    os.environ.clear()
    os.environ.update(environ)
    if then is not None:
        then()


def refuse_while_importing_main(call: str) -> None:
    """Raise :class:`ConfigError` when called while this process, a spawned worker, imports
    the parent's main module: a script that calls ``call`` at its top level would otherwise
    start the work again in every worker (and with ``overwrite``, delete the parent's run)."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ConfigError(f"{call} was called while a worker process was importing the main "
                          "module; call it under `if __name__ == \"__main__\":`")


def _raise_system_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """A worker initializer: SIGTERM (the pool being stopped) ends the task like Ctrl-C,
    through its ``finally`` blocks, so a worker that runs a pool of its own stops that pool's
    processes and gives up its run folder's claim instead of leaving them behind."""
    signal.signal(signal.SIGTERM, _raise_system_exit)


def run_in_pool(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int, *,
                failed: Callable[[int, BaseException], BaseException],
                poll: Callable[[], None] | None = None,
                done: Callable[[int, Any], None] | None = None,
                initializer: Callable[[], None] | None = None) -> None:
    """Run ``fn(task)`` for every task in ``workers`` worker processes, handed out in order.

    ``poll()`` is called after each finish and at least every :data:`POLL_SECONDS`;
    ``done(i, result)`` for each task that finished, in the order of their indices where
    several finish together. The first task that raises stops the others (those not started
    are cancelled, the running ones terminated) and ``failed(i, error)`` is raised from its
    error; so is any exception of the caller's own (an interrupt, ``done`` raising).
    ``fn``, the tasks and the results must pickle, and ``fn`` be importable by the workers.
    """
    executor = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker,
                                   initargs=(dict(os.environ), initializer),
                                   mp_context=worker_context())
    futures: dict[Future, int] = {}
    try:
        for i, task in enumerate(tasks):
            futures[executor.submit(fn, task)] = i
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            if poll is not None:
                poll()
            for future in sorted(finished, key=futures.__getitem__):
                error = future.exception()
                if error is not None:
                    raise failed(futures[future], error) from error
                if done is not None:
                    done(futures[future], future.result())
    except BaseException:
        _stop_workers(executor, futures)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _stop_workers(executor: ProcessPoolExecutor, futures: dict[Future, int]) -> None:
    """Cancel the tasks not started and terminate the running ones: a generation cut short
    has no completion record, so a resume runs it again from its start."""
    for future in futures:
        future.cancel()
    terminate = getattr(executor, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    # Before 3.14: the pool's processes; once one is gone the pool is broken, and its manager
    # terminates and joins the rest (shutdown waits for that).
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()
