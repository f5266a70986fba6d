"""Fixtures shared by the test folders: the tiny causal LM, trained once per test run.

``tiny_gpt2`` is the one tiny language model of the provenance tests (watermark and detectors):
a byte-level BPE of 1,000 tokens and a two-layer GPT-2 trained for 600 steps on the
even-numbered standard-library docstring paragraphs; the odd-numbered ones are human text it
never saw. Training takes 30 to 60 seconds on one thread, so it is done once per run: the first
pytest-xdist worker that asks builds it into a folder all workers share (under a file lock), the
others wait and load it (``build_once``).

Heavy imports (torch, transformers) happen inside the fixtures: collecting the suite stays cheap.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: What the shared model is: tokenizer size, positions (prompt and generated tokens together),
#: training steps and the length of the training blocks. The detector tests' thresholds (AUROC,
#: TPR) were measured on exactly this model: a change of shape re-draws its weights.
TINY_GPT2_VOCAB = 1000
TINY_GPT2_POSITIONS = 128
TINY_GPT2_STEPS = 600
TINY_GPT2_BLOCK = 64
EOT = "<|endoftext|>"

#: Not doctest-collected (it has no doctests): ``--doctest-modules`` imports a conftest outside a
#: package as module ``conftest``, a name the conftests of the subfolders (collected first,
#: ``collapse_eval/`` sorts before ``conftest.py``) have taken by then: "import file mismatch".
collect_ignore = ["conftest.py"]


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this run that every xdist worker sees: the run's base temp folder (each
    worker's own lies inside it, ``.../pytest-N/popen-gw0``); the process's own without xdist.
    Never a folder of an earlier run, so nothing stale is reused."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _read_only(folder: Path) -> None:
    for path in folder.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    folder.chmod(0o555)


def build_once(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """``root/name``, made by ``build(folder)`` unless a process made it already; read-only.

    An exclusive ``flock`` on ``root/name.lock`` makes the other processes wait while one
    builds; ``root/name.done`` is written only after ``build`` returned, so a build that failed
    is started over by the next process (from an empty folder) rather than handed out half done.
    """
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                if folder.exists():  # what a failed build left
                    for path in [folder, *folder.rglob("*")]:
                        if path.is_dir():
                            path.chmod(0o755)
                    shutil.rmtree(folder)
                folder.mkdir()
                build(folder)
                _read_only(folder)
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


@dataclass(frozen=True)
class TinyGPT2:
    """The shared tiny LM. ``path`` is a read-only folder with the model (safetensors, config)
    and its tokenizer, loadable by name like any local model; ``load_model()`` gives a fresh
    copy in eval mode, so a test folder that changes its copy changes no one else's.
    Consumers take it as a fixture; conftest modules are not imported."""

    path: Path
    tokenizer: Any
    train_texts: list[str] = field(repr=False)  # what the model was trained on
    held_out: list[str] = field(repr=False)  # human paragraphs it never saw

    def load_model(self) -> Any:
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel.from_pretrained(self.path).eval()

    def train_another(self, texts: list[str], steps: int, seed: int) -> Any:
        """Another model of the same shape and tokenizer, trained on ``texts`` for ``steps``."""
        return train_tiny_gpt2(self.tokenizer, texts, steps, seed)


def train_tiny_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE with ``<|endoftext|>`` (id 0) as its bos, eos and pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=EOT, eos_token=EOT,
                                   pad_token=EOT)


def train_tiny_gpt2(tokenizer: Any, texts: list[str], steps: int, seed: int, *,
                    n_layer: int = 2, n_embd: int = 64,
                    n_positions: int = TINY_GPT2_POSITIONS) -> Any:
    """A GPT-2 trained for ``steps`` batches of 16 random ``TINY_GPT2_BLOCK``-token blocks of
    ``texts`` (joined with eos), in eval mode. Draws from torch's global generator, seeded here;
    the caller's random state is restored afterwards."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
            n_head=2, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
        )
        model = GPT2LMHeadModel(config)
        stream: list[int] = []
        for ids in tokenizer(texts)["input_ids"]:
            stream += ids + [eos]
        n = len(stream) // TINY_GPT2_BLOCK * TINY_GPT2_BLOCK
        blocks = torch.tensor(stream[:n]).view(-1, TINY_GPT2_BLOCK)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            batch = blocks[torch.randint(0, len(blocks), (16,))]
            model(input_ids=batch, labels=batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> TinyGPT2:
    """The shared tiny LM (see the module docstring), trained once per run on one thread."""
    from provenance.demo import stdlib_paragraphs
    from provenance.devices import torch_threads

    paragraphs = stdlib_paragraphs()
    train_texts, held_out = paragraphs[::2], paragraphs[1::2]

    def build(folder: Path) -> None:
        with torch_threads(1):
            tokenizer = train_tiny_tokenizer(paragraphs, TINY_GPT2_VOCAB)
            model = train_tiny_gpt2(tokenizer, train_texts, TINY_GPT2_STEPS, seed=0)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    from transformers import PreTrainedTokenizerFast

    path = build_once(_shared_root(tmp_path_factory), "tiny-gpt2", build)
    return TinyGPT2(path, PreTrainedTokenizerFast.from_pretrained(path), train_texts, held_out)


# ---- a real browser, for the HTML report and the docs site ----------------------------------


def find_browser() -> str | None:
    """A Chromium-family browser on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def headless(browser: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the browser headless (no sandbox: tests may run as root) and return its output."""
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-extensions", "--hide-scrollbars", "--no-first-run", *args],
        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def browser() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``browser(*args)`` runs headless Chromium with those arguments; skips where there is none."""
    path = find_browser()
    if path is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package)")
    return functools.partial(headless, path)
