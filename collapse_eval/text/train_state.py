"""Training that survives being killed: the state :func:`~collapse_eval.text.model.train_lm`
leaves after each epoch, and picks up again.

An LM run resumes generation by generation, and a generation can be long: in the default run an
``accumulate`` generation near the end trains for about 45 minutes on a CPU core, a fine-tuned
135M-parameter model for hours. Killing the run (a preempted machine, a session that ends) used
to throw that training away. With a state folder, at most one epoch is lost, and the resumed
training gives bit for bit the weights of an uninterrupted one (same device and threads), so a
resumed run's results are the uninterrupted run's. The state stays after the last epoch, until
the caller has saved what it made of the model (the LM loop: the generation's sampling and
metrics), so a kill after the training does not cost the training either.

The folder holds everything the next epoch depends on: the weights, the best epoch's weights
(safetensors), the optimiser, learning-rate schedule and loss scaler, the batch-order generator
and torch's random state (``torch.save`` of tensors and numbers, read back with
``weights_only=True``: nothing is unpickled), and ``state.json`` with the epochs done, their
history and a fingerprint of the recipe, seed and data. A state whose fingerprint differs (other
data, another recipe) is ignored and replaced, never resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from provenance.errors import TailguardWarning

__all__ = ["SavedTraining", "TrainingLoop", "drop_state", "fingerprint", "load_state",
           "save_state", "swap_in_folder"]

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class TrainingLoop:
    """The live objects of one ``train_lm`` call whose state a checkpoint holds."""

    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    order_rng: torch.Generator
    device: str


@dataclass
class SavedTraining:
    """What ``state.json`` and the best weights say of the epochs already done."""

    epochs_done: int
    history: list[dict[str, float]]
    train_seconds: float
    best: tuple[float, int, dict[str, torch.Tensor]] | None


def fingerprint(recipe: dict[str, Any], seed: int, train_blocks: torch.Tensor,
                valid_blocks: torch.Tensor | None) -> str:
    """Identifies one training job: a state resumes only the job that wrote it."""
    digest = hashlib.sha256(json.dumps({"recipe": recipe, "seed": seed}, sort_keys=True)
                            .encode())
    for blocks in (train_blocks, valid_blocks):
        if blocks is None:
            digest.update(b"none")
            continue
        digest.update(str(tuple(blocks.shape)).encode())
        digest.update(blocks.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def swap_in_folder(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` with the fully written ``tmp`` (a killed process leaves the old one
    or the new one under the final name, never a half-written one)."""
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Tied weights are one tensor under two names; safetensors wants each stored on its own.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def save_state(folder: str | os.PathLike, key: str, loop: TrainingLoop,
               saved: SavedTraining) -> None:
    """Write the state after ``saved.epochs_done`` epochs, replacing the previous one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_tensors(loop.model.state_dict()), tmp / WEIGHTS_FILE)
    if saved.best is not None:
        save_file(_tensors(saved.best[2]), tmp / BEST_FILE)
    random_state = {"order_rng": loop.order_rng.get_state(), "torch_rng": torch.get_rng_state()}
    if loop.device.startswith("cuda"):
        random_state["cuda_rng"] = torch.cuda.get_rng_state(loop.device)
    torch.save({"optimizer": loop.optimizer.state_dict(),
                "scheduler": loop.scheduler.state_dict(),
                "scaler": loop.scaler.state_dict() if loop.scaler.is_enabled() else {},
                **random_state}, tmp / OPTIMIZER_FILE)
    info = {"fingerprint": key, "epochs_done": saved.epochs_done, "history": saved.history,
            "train_seconds": saved.train_seconds,
            "best": None if saved.best is None else list(saved.best[:2])}
    (tmp / STATE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    swap_in_folder(tmp, folder)


def load_state(folder: str | os.PathLike, key: str, loop: TrainingLoop) -> SavedTraining | None:
    """Restore ``loop`` from the state in ``folder`` and say where it stopped; ``None`` (and
    ``loop`` untouched) where there is none or it belongs to another job.

    Call it inside the training's ``torch.random.fork_rng``: it sets torch's random state."""
    folder = Path(folder)
    try:
        info = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"{folder / STATE_FILE}: unreadable training state ({exc}); training "
                      "starts over", TailguardWarning, stacklevel=3)
        return None
    if info.get("fingerprint") != key:
        warnings.warn(f"{folder}: the training state there is of other data or another recipe; "
                      "training starts over", TailguardWarning, stacklevel=3)
        return None
    loop.model.load_state_dict(load_file(folder / WEIGHTS_FILE, device="cpu"))
    rest = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    loop.optimizer.load_state_dict(rest["optimizer"])
    loop.scheduler.load_state_dict(rest["scheduler"])
    if rest["scaler"]:
        loop.scaler.load_state_dict(rest["scaler"])
    loop.order_rng.set_state(rest["order_rng"])
    torch.set_rng_state(rest["torch_rng"])
    if "cuda_rng" in rest and loop.device.startswith("cuda"):
        torch.cuda.set_rng_state(rest["cuda_rng"], loop.device)
    best = None
    if info["best"] is not None:
        ppl, epoch = info["best"]
        best = (float(ppl), int(epoch), load_file(folder / BEST_FILE, device=loop.device))
    return SavedTraining(int(info["epochs_done"]), list(info["history"]),
                         float(info["train_seconds"]), best)


def drop_state(folder: str | os.PathLike) -> None:
    """Remove a finished training's state (and any half-written one beside it)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    for stray in folder.parent.glob(f".{folder.name}.*"):
        shutil.rmtree(stray, ignore_errors=True)
