"""A small GPT-2 trained from scratch (or any causal LM fine-tuned), and its perplexities.

Shumailov et al. fine-tune OPT-125m on WikiText-2; on a CPU that is hours per generation. The
default here is a GPT-2 small enough to train on a CPU in minutes (2.4M tokens: 290-390 s at
6,200-8,400 tokens/s on one thread of a busy 2-core machine, ``benchmarks/bench_lm.py``) yet
clearly better than a bigram model (validation perplexity 156 against 227 on the default
corpus), so that what recursive training loses is measurable:
``GPT2Config(vocab_size=4096, n_positions=64, n_embd=128, n_layer=2, n_head=2)`` -- 0.93M
parameters, no dropout, tied input/output embeddings, token embeddings initialised with standard
deviation 0.1 (GPT-2's 0.02 leaves a tied 128-wide embedding too small to train quickly) --
trained with AdamW (lr 4e-3, betas (0.9, 0.99), weight decay 0.1 on matrices only), 10% linear
warm-up then cosine decay to 0.1x, gradient clipping at 1.0, batches of 8 blocks of 64 tokens,
3 epochs. All of it is an :class:`LMRecipe`, saved with every checkpoint.

Like the paper, :func:`train_lm` keeps the checkpoint with the best validation perplexity (one
evaluation per epoch). On CUDA it trains under autocast (bfloat16 where supported, else float16
with loss scaling) and may use a larger batch (``LMRecipe.cuda_batch_size``); on the CPU it runs
the recipe exactly, and the same seed gives the same weights.

Perplexities are over next-token predictions inside each block: a block of ``L`` tokens scores
its last ``L - 1`` tokens, each given the tokens before it in the block (the first token has no
context and is not scored). :func:`collapse_eval.text.text_metrics.ngram_baselines` scores the
same tokens, so the numbers compare.

Checkpoints are safetensors (``save_pretrained``) plus ``recipe.json``; nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from collapse_eval.text import train_state
from collapse_eval.text.tokenizer import EOT_ID
from provenance.devices import resolve_device
from provenance.errors import ConfigError, InputError
from provenance.models import no_hf_progress_bars

__all__ = [
    "MODEL_SHAPE_FIELDS",
    "LMRecipe",
    "TrainReport",
    "clone_model",
    "load_model",
    "load_pretrained",
    "load_recipe",
    "lr_factor",
    "new_model",
    "perplexity",
    "save_model",
    "sequence_perplexities",
    "train_lm",
]

RECIPE_FILE = "recipe.json"
#: The :class:`LMRecipe` fields that shape a model trained from scratch; a pretrained model
#: brings its own shape, so these do not apply when fine-tuning.
MODEL_SHAPE_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "dropout",
                      "tie_embeddings", "embedding_init_std")


@dataclass(frozen=True)
class LMRecipe:
    """Everything that defines a language model's training, JSON-serialisable.

    The model shape fields (:data:`MODEL_SHAPE_FIELDS`) are used by
    :func:`new_model` only; fine-tuning a pretrained model uses the optimisation fields.
    ``cuda_batch_size`` replaces ``batch_size`` on CUDA (``None``: the same), and ``amp``
    turns on autocast there; neither applies on the CPU.

    Examples
    --------
    >>> recipe = LMRecipe(epochs=1)
    >>> LMRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    True
    >>> LMRecipe(lr=-1.0)
    Traceback (most recent call last):
    ...
    provenance.errors.ConfigError: lr must be > 0, got -1.0
    """

    vocab_size: int = 4096
    n_positions: int = 64
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 2
    dropout: float = 0.0
    tie_embeddings: bool = True
    embedding_init_std: float = 0.1
    block: int = 64
    batch_size: int = 8
    epochs: int = 3
    lr: float = 4e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    final_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    eval_batch_size: int = 64
    cuda_batch_size: int | None = None
    amp: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "block",
                     "batch_size", "epochs", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.cuda_batch_size is not None and (
            isinstance(self.cuda_batch_size, bool)
            or not isinstance(self.cuda_batch_size, int)
            or self.cuda_batch_size < 1
        ):
            raise ConfigError(f"cuda_batch_size must be a positive integer or None, got "
                              f"{self.cuda_batch_size!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be a multiple of n_head "
                              f"({self.n_head})")
        if self.block < 2:
            raise ConfigError(f"block must be >= 2 (one token of context, one to predict), got "
                              f"{self.block}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("dropout", "warmup_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ConfigError(f"final_lr_fraction must be in [0, 1], got "
                              f"{self.final_lr_fraction}")
        for name in ("weight_decay", "grad_clip", "embedding_init_std"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMRecipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown LMRecipe fields: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> Path:
        from provenance.atomic import atomic_path

        dest = Path(path)
        with atomic_path(dest) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike) -> LMRecipe:
        src = Path(path)
        try:
            data = json.loads(src.read_text())
        except FileNotFoundError:
            raise InputError("recipe file not found", file=str(src)) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"not a readable recipe: {exc}", file=str(src)) from None
        if not isinstance(data, dict):
            raise InputError("a recipe must be a JSON object", file=str(src))
        return cls.from_dict(data)

    def batch_size_for(self, device: str) -> int:
        if device.startswith("cuda") and self.cuda_batch_size is not None:
            return self.cuda_batch_size
        return self.batch_size


@dataclass
class TrainReport:
    """What one :func:`train_lm` call did.

    ``valid_perplexity`` is the kept checkpoint's (the best epoch's), ``None`` without
    validation data (then the last epoch is kept). ``tokens_per_s`` counts training tokens over
    the time spent in training steps (evaluations excluded); ``seconds`` is the whole call.
    """

    valid_perplexity: float | None
    best_epoch: int
    epochs: int
    steps: int
    tokens: int
    tokens_per_s: float
    seconds: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- building


def new_model(recipe: LMRecipe | None = None, seed: int = 0, *, eot_id: int = EOT_ID) -> Any:
    """A freshly initialised :class:`transformers.GPT2LMHeadModel` from a recipe.

    Initialisation draws from torch's global generator inside :func:`torch.random.fork_rng`, so
    the caller's random state is untouched and the same seed gives the same weights. ``eot_id``
    becomes the config's bos and eos token (the tokenizer's ``<|endoftext|>``). No pad token
    is set: blocks are never padded, and a pad id equal to a token that occurs inside blocks
    would make transformers warn about padding on every forward pass.

    Examples
    --------
    >>> recipe = LMRecipe(vocab_size=300, n_embd=32)
    >>> model = new_model(recipe, seed=1)
    >>> sum(p.numel() for p in model.parameters())  # tied embeddings count once
    37120
    >>> twin = new_model(recipe, seed=1)
    >>> all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    True
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    recipe = recipe or LMRecipe()
    config = GPT2Config(
        vocab_size=recipe.vocab_size,
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        resid_pdrop=recipe.dropout,
        embd_pdrop=recipe.dropout,
        attn_pdrop=recipe.dropout,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=recipe.tie_embeddings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
        if recipe.embedding_init_std > 0:
            torch.nn.init.normal_(model.transformer.wte.weight, std=recipe.embedding_init_std)
    return model


# --------------------------------------------------------------------------- training


def _optimizer(model: Any, recipe: LMRecipe, device: str) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices (and embeddings) only, never on biases or norms."""
    decay, no_decay = [], []
    for param in model.parameters():  # tied weights appear once
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device.startswith("cuda") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=recipe.betas, **extra)


def lr_factor(step: int, total_steps: int, recipe: LMRecipe) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up, then cosine to the floor.

    Examples
    --------
    >>> r = LMRecipe()
    >>> [round(lr_factor(s, 100, r), 3) for s in (0, 4, 9, 10, 99)]
    [0.1, 0.5, 1.0, 1.0, 0.1]
    """
    warmup = max(1, round(recipe.warmup_fraction * total_steps)) if recipe.warmup_fraction else 0
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total_steps - 1 - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = recipe.final_lr_fraction
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_blocks(blocks: Any, name: str, vocab_size: int | None = None) -> torch.Tensor:
    if not isinstance(blocks, torch.Tensor) or blocks.dim() != 2:
        raise InputError(f"{name} must be a 2-D LongTensor (n_blocks, block), got "
                         f"{getattr(blocks, 'shape', type(blocks).__name__)}")
    if blocks.dtype != torch.long:
        blocks = blocks.long()
    if blocks.shape[1] < 2:
        raise InputError(f"{name} blocks need at least 2 tokens, got {blocks.shape[1]}")
    if blocks.numel() and vocab_size is not None:
        low, high = int(blocks.min()), int(blocks.max())
        if low < 0 or high >= vocab_size:
            raise InputError(f"{name} token ids must be in [0, {vocab_size}), got {low}..{high}")
    return blocks


def _autocast(device: str, enabled: bool) -> Any:
    if device.startswith("cuda") and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _next_token_loss(model: Any, x: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of tokens 1..L-1 of each block given the tokens before them.

    The targets are shifted (the last position gets the ignored label -100) rather than the
    logits sliced, which would copy the (batch, L, vocab) logits every step (~15% of a step).
    """
    logits = model(input_ids=x, use_cache=False).logits  # (batch, L, vocab)
    targets = F.pad(x[:, 1:], (0, 1), value=-100)  # (batch, L)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=-100)


def train_lm(
    model: Any,
    train_blocks: torch.Tensor,
    *,
    recipe: LMRecipe | None = None,
    seed: int = 0,
    valid_blocks: torch.Tensor | None = None,
    device: str = "cpu",
    progress: bool = False,
    state_dir: str | os.PathLike | None = None,
) -> TrainReport:
    """Train ``model`` on token blocks in place; keep the best epoch on validation data.

    Parameters
    ----------
    model : a causal LM (``new_model`` or any Hugging Face ``*ForCausalLM``)
    train_blocks : LongTensor (n_blocks, block)
        From :func:`collapse_eval.text.tokenizer.encode_blocks`.
    recipe : LMRecipe, default ``LMRecipe()``
        The optimisation settings (batch size, epochs, learning-rate schedule ...).
    seed : int, default 0
        Orders the batches (a fresh permutation per epoch) and seeds dropout, if any.
    valid_blocks : LongTensor, optional
        Scored after every epoch; the best epoch's weights are restored at the end.
    device : ``auto``, ``cpu`` or ``cuda[:N]``
    progress : bool, default False
        Show a progress bar (on a terminal).
    state_dir : path, optional
        Where to leave the training state after each epoch (see
        :mod:`collapse_eval.text.train_state`): a call killed part-way and made again with the
        same arguments goes on from its last whole epoch, to the same weights, and once all
        epochs are done it returns the finished training at once. The caller removes it
        (:func:`~collapse_eval.text.train_state.drop_state`) when what it made of the model is
        safe.

    Returns
    -------
    TrainReport
    """
    from tqdm.auto import tqdm

    recipe = recipe or LMRecipe()
    device = resolve_device(device)
    vocab = model.get_output_embeddings().weight.shape[0]
    train_blocks = _check_blocks(train_blocks, "train_blocks", vocab)
    if valid_blocks is not None:
        valid_blocks = _check_blocks(valid_blocks, "valid_blocks", vocab)
    max_positions = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    if max_positions is not None and train_blocks.shape[1] > max_positions:
        raise ConfigError(f"blocks of {train_blocks.shape[1]} tokens exceed the model's "
                          f"{max_positions} positions; encode shorter blocks")
    n = train_blocks.shape[0]
    if n == 0:
        raise InputError("train_blocks is empty")
    batch_size = min(recipe.batch_size_for(device), n)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = recipe.epochs * steps_per_epoch

    model.to(device)
    optimizer = _optimizer(model, recipe, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, recipe)
    )
    use_amp = device.startswith("cuda") and recipe.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    order_rng = torch.Generator().manual_seed(seed)
    data = train_blocks.to(device)
    params = [p for p in model.parameters() if p.requires_grad]

    start = time.perf_counter()
    saved = train_state.SavedTraining(0, [], 0.0, None)
    loop = train_state.TrainingLoop(model, optimizer, scheduler, scaler, order_rng, device)
    key = (train_state.fingerprint(recipe.to_dict(), seed, train_blocks, valid_blocks)
           if state_dir is not None else "")
    bar = tqdm(total=total_steps, unit="step", desc="train", disable=None if progress else True)
    rng_devices = [torch.device(device)] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)  # dropout, where a model has it
        if state_dir is not None:
            saved = train_state.load_state(state_dir, key, loop) or saved
            bar.update(saved.epochs_done * steps_per_epoch)
        train_seconds, history, best = saved.train_seconds, saved.history, saved.best
        for epoch in range(saved.epochs_done, recipe.epochs):
            model.train()
            epoch_start = time.perf_counter()
            order = torch.randperm(n, generator=order_rng).to(device)
            loss_sum = torch.zeros((), device=device)
            for step in range(steps_per_epoch):
                x = data[order[step * batch_size : (step + 1) * batch_size]]
                with _autocast(device, use_amp):
                    loss = _next_token_loss(model, x)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if recipe.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += loss.detach()
                bar.update(1)
            train_seconds += time.perf_counter() - epoch_start
            row = {"epoch": epoch + 1,
                   "train_loss": float(loss_sum) / steps_per_epoch,
                   "seconds": time.perf_counter() - epoch_start}
            if valid_blocks is not None:
                ppl = perplexity(model, valid_blocks, batch_size=recipe.eval_batch_size)
                row["valid_perplexity"] = ppl
                if best is None or ppl < best[0]:
                    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best = (ppl, epoch + 1, state)
                bar.set_postfix(valid_ppl=f"{ppl:.1f}")
            history.append(row)
            if state_dir is not None:
                train_state.save_state(state_dir, key, loop, train_state.SavedTraining(
                    epoch + 1, history, train_seconds, best))
    bar.close()
    best_epoch = recipe.epochs
    valid_ppl = None
    if best is not None:
        valid_ppl, best_epoch, state = best
        model.load_state_dict(state)
    model.eval()
    tokens = recipe.epochs * n * train_blocks.shape[1]
    return TrainReport(
        valid_perplexity=valid_ppl,
        best_epoch=best_epoch,
        epochs=recipe.epochs,
        steps=total_steps,
        tokens=tokens,
        tokens_per_s=tokens / train_seconds if train_seconds > 0 else float("nan"),
        seconds=time.perf_counter() - start,
        device=device,
        history=history,
    )


# --------------------------------------------------------------------------- evaluation


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _iter_block_nll(
    model: Any, blocks: torch.Tensor, batch_size: int
) -> Iterator[torch.Tensor]:
    """Per-block summed negative log-likelihood (float64) of tokens 1..L-1, batch by batch."""
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, blocks.shape[0], batch_size):
                x = blocks[start : start + batch_size].to(device)
                logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
                nll = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
                )
                yield nll.view(x.shape[0], -1).double().sum(dim=1).cpu()
    finally:
        model.train(was_training)


def _eval_batch_size(model: Any, batch_size: int | None) -> int:
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        return batch_size
    return 512 if _model_device(model).type == "cuda" else 64


def perplexity(model: Any, blocks: torch.Tensor, *, batch_size: int | None = None) -> float:
    """Perplexity of the model on token blocks: ``exp`` of the mean next-token loss over all
    scored tokens (tokens 1..L-1 of each block; see the module notes).

    ``batch_size`` defaults to 64 on the CPU, 512 on CUDA; the result does not depend on it
    (beyond float rounding).
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    blocks = _check_blocks(blocks, "blocks", vocab)
    if blocks.shape[0] == 0:
        raise InputError("cannot compute a perplexity on zero blocks")
    total = sum(float(b.sum()) for b in _iter_block_nll(model, blocks,
                                                      _eval_batch_size(model, batch_size)))
    return math.exp(total / (blocks.shape[0] * (blocks.shape[1] - 1)))


def sequence_perplexities(
    model: Any, blocks: torch.Tensor, *, batch_size: int | None = None
) -> np.ndarray:
    """One perplexity per block (``exp`` of its mean next-token loss), float64, shape (n,).

    The paper's histograms of per-sequence perplexity of generated text under the
    generation-0 model are these values (see :func:`.text_metrics.perplexity_quantiles`).
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    blocks = _check_blocks(blocks, "blocks", vocab)
    if blocks.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    nll = torch.cat(list(_iter_block_nll(model, blocks, _eval_batch_size(model, batch_size))))
    return torch.exp(nll / (blocks.shape[1] - 1)).numpy()


# --------------------------------------------------------------------------- files


def save_model(
    model: Any,
    folder: str | os.PathLike,
    *,
    recipe: LMRecipe | None = None,
    tokenizer: Any = None,
) -> Path:
    """Write the model as safetensors (``save_pretrained``), with ``recipe.json`` and the
    tokenizer when given. The folder is written beside the target and swapped in at the end,
    so a killed process never leaves a half-written checkpoint under the final name.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with no_hf_progress_bars():
        model.save_pretrained(tmp)
    if not (tmp / "model.safetensors").exists() and not list(tmp.glob("*.safetensors")):
        raise ConfigError("save_pretrained did not write safetensors")  # pragma: no cover
    if recipe is not None:
        recipe.save(tmp / RECIPE_FILE)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    train_state.swap_in_folder(tmp, folder)
    return folder


def load_model(folder: str | os.PathLike, *, device: str = "cpu") -> Any:
    """A model saved by :func:`save_model` (safetensors only), in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise InputError("no model here (config.json is missing)", file=str(folder))
    try:
        with no_hf_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load model: {first}", file=str(folder)) from exc
    return model.to(resolve_device(device)).eval()


def load_recipe(folder: str | os.PathLike) -> LMRecipe | None:
    """The recipe saved beside a model, or ``None`` where there is none."""
    path = Path(folder) / RECIPE_FILE
    return LMRecipe.load(path) if path.exists() else None


def load_pretrained(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
) -> Any:
    """A pretrained causal LM and its tokenizer to fine-tune (the paper fine-tunes OPT-125m).

    ``name_or_path`` is a local folder, a hub id (needs a connection or the hub cache), or
    ``smollm2-135m`` for the model tailguard can convert offline (see
    :mod:`provenance.models`). With ``gguf_file``, the GGUF file in that folder is dequantised
    by transformers' GGUF loader. Weights load as ``dtype`` (float32 by default: training in
    half precision goes through autocast, not half weights). Returns a
    :class:`provenance.models.LoadedModel` in eval mode; :func:`train_lm` switches modes itself.
    """
    from provenance.models import LoadedModel, load_causal_lm, model_path

    if gguf_file is None:
        return load_causal_lm(name_or_path, device=device, dtype=dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_path(name_or_path)
    resolved = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(
            path, gguf_file=gguf_file, dtype=getattr(torch, dtype)
        )
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load model: {first}", file=f"{path}/{gguf_file}") from exc
    # Dequantised weights are plain tensors; drop the GGUF markers so save_pretrained writes an
    # ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(resolved).eval()
    return LoadedModel(name=str(name_or_path), model=model, tokenizer=tokenizer, device=resolved)


def clone_model(model: Any) -> Any:
    """An independent copy of a model (weights included), e.g. to keep generation 0."""
    return copy.deepcopy(model)
