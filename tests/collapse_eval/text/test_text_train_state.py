"""Training that survives a kill: a real SIGKILL mid-training, then the same call goes on from
the last whole epoch to the uninterrupted run's weights; a finished state is the finished
training until the caller drops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from collapse_eval.text.model import LMRecipe, new_model, train_lm
from collapse_eval.text.train_state import drop_state
from provenance.errors import TailguardWarning

#: Dropout on, so torch's random state matters too; enough epochs for the kill to land between.
RECIPE = LMRecipe(vocab_size=512, n_positions=32, n_embd=32, n_layer=1, n_head=2, block=32,
                  batch_size=8, epochs=12, lr=1e-2, dropout=0.1)
SEED = 7
TRAIN, VALID = 400, 64  # blocks: an epoch is a fraction of a second

CHILD = """
import json, sys, torch
from safetensors.torch import load_file
from collapse_eval.text.model import LMRecipe, new_model, train_lm
torch.set_num_threads(1)
data = load_file(sys.argv[1])
recipe = LMRecipe.from_dict(json.loads(sys.argv[2]))
train_lm(new_model(recipe, seed=0), data["train"], recipe=recipe, seed=int(sys.argv[3]),
         valid_blocks=data["valid"], state_dir=sys.argv[4])
"""


def _train(tiny_lm, state_dir: Path | None = None) -> tuple[torch.nn.Module, object]:
    model = new_model(RECIPE, seed=0)
    report = train_lm(model, tiny_lm.train[:TRAIN], recipe=RECIPE, seed=SEED,
                      valid_blocks=tiny_lm.valid[:VALID], state_dir=state_dir)
    return model, report


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _kill_after_epochs(tiny_lm, tmp_path: Path, epochs: int) -> Path:
    """Train in another process and SIGKILL it once ``epochs`` epochs are saved."""
    data = tmp_path / "blocks.safetensors"
    save_file({"train": tiny_lm.train[:TRAIN].contiguous(),
               "valid": tiny_lm.valid[:VALID].contiguous()}, data)
    state_dir = tmp_path / "state"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data),
                              json.dumps(RECIPE.to_dict()), str(SEED), str(state_dir)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and child.poll() is None:
            try:
                done = json.loads((state_dir / "state.json").read_text())["epochs_done"]
            except (FileNotFoundError, ValueError, KeyError):
                done = 0
            if done >= epochs:
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the training ended before it could be killed"
    return state_dir


def test_a_killed_training_goes_on_to_the_uninterrupted_weights(tiny_lm, tmp_path):
    state_dir = _kill_after_epochs(tiny_lm, tmp_path, epochs=2)
    saved = json.loads((state_dir / "state.json").read_text())
    assert 2 <= saved["epochs_done"] < RECIPE.epochs
    assert {p.name for p in state_dir.iterdir()} == {
        "state.json", "model.safetensors", "best.safetensors", "optimizer.pt"}

    resumed, resumed_report = _train(tiny_lm, state_dir)
    straight, straight_report = _train(tiny_lm)
    assert _same_weights(resumed, straight)
    assert resumed_report.best_epoch == straight_report.best_epoch
    assert resumed_report.valid_perplexity == straight_report.valid_perplexity
    assert [(r["epoch"], r["train_loss"], r["valid_perplexity"])
            for r in resumed_report.history] == [
        (r["epoch"], r["train_loss"], r["valid_perplexity"]) for r in straight_report.history]
    # The finished state stays until the caller drops it; meanwhile the same call returns the
    # finished training without training again.
    assert json.loads((state_dir / "state.json").read_text())["epochs_done"] == RECIPE.epochs
    again, again_report = _train(tiny_lm, state_dir)
    assert _same_weights(again, straight) and again_report.history == resumed_report.history
    assert again_report.seconds < resumed_report.seconds
    drop_state(state_dir)
    assert not state_dir.exists() and not list(tmp_path.glob(".state.*"))


def test_a_state_of_another_job_is_not_resumed(tiny_lm, tmp_path):
    state_dir = _kill_after_epochs(tiny_lm, tmp_path, epochs=1)
    # another learning rate (and two epochs: a wrongly resumed state would still show in the
    # weights, and the two trainings below take a sixth of the time)
    other = replace(RECIPE, lr=5e-3, epochs=2)
    model = new_model(other, seed=0)
    with pytest.warns(TailguardWarning, match="other data or another recipe"):
        train_lm(model, tiny_lm.train[:TRAIN], recipe=other, seed=SEED,
                 valid_blocks=tiny_lm.valid[:VALID], state_dir=state_dir)
    reference = new_model(other, seed=0)
    train_lm(reference, tiny_lm.train[:TRAIN], recipe=other, seed=SEED,
             valid_blocks=tiny_lm.valid[:VALID])
    assert _same_weights(model, reference)


def test_an_unreadable_state_starts_over_with_a_warning(tiny_lm, tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text("{truncated")
    short = replace(RECIPE, epochs=1)
    model = new_model(short, seed=0)
    with pytest.warns(TailguardWarning, match=r"state\.json: unreadable training state"):
        train_lm(model, tiny_lm.train[:64], recipe=short, seed=SEED, state_dir=state_dir)
    reference = new_model(short, seed=0)
    train_lm(reference, tiny_lm.train[:64], recipe=short, seed=SEED)
    assert _same_weights(model, reference)
    assert json.loads((state_dir / "state.json").read_text())["epochs_done"] == 1
