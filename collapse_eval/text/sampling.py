"""Synthetic text from a causal LM: a KV-cache sampler that continues prompts, and beam search.

Shumailov et al. make each generation's training data by continuing blocks of the current
training data, so the synthetic set covers the same positions as the real one;
:func:`sample_continuations` does that for a tensor of prompts. It is a plain loop over the
model's key/value cache (one forward pass over the prompts, then one token per step), sampling
by inverse CDF. With the default 0.93M-parameter model on a CPU it draws 2-3 times as many
tokens per second as ``model.generate(do_sample=True)``, whose per-step overhead around the
model (its processor list, ``multinomial`` sampling, stopping criteria) outweighs the forward
pass of a model this small; ``benchmarks/bench_lm.py`` measures both.

Randomness
----------
Each token is drawn with one uniform number, a pure function of (``seed``, row, step) from the
counter-based :class:`collapse_eval.rng.ChainRandom`: the draw is the first token whose
cumulative probability exceeds ``u`` times the total. So a row's sample does not depend on the
batch size or on the other rows (up to float rounding of batched matrix products, which can
only matter where ``u`` falls within rounding of a token boundary), the caller's random state is
never touched, and temperature -> 0 is greedy decoding.

Logits processors
-----------------
At every step the next-token logits are divided by ``temperature`` and cut to the ``top_k``
largest, then each processor is applied as ``scores = proc(input_ids_so_far, scores)`` -- the
order transformers uses for its watermark, which ``generate`` applies after all warpers.
:class:`transformers.generation.logits_process.WatermarkLogitsProcessor` (built with
``WatermarkingConfig.construct_processor``, e.g. from
:meth:`provenance.watermark.WatermarkKey.generation_config`) works as is; with ``lefthash``
seeding its green list depends only on the preceding tokens, so the sampler wraps it in
:class:`CachedGreenlists`, which draws each green list once with the processor's own
``_get_greenlist_ids`` and reuses it (identical scores; the processor draws a vocabulary
permutation per row and step otherwise).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from provenance.devices import resolve_device
from provenance.errors import ConfigError, InputError

__all__ = ["CachedGreenlists", "beam_generate", "inverse_cdf", "sample_continuations"]

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLE_STREAM = "lm-sample"


class CachedGreenlists:
    """A ``lefthash`` :class:`WatermarkLogitsProcessor` with its green lists cached.

    Returns exactly what the wrapped processor returns: the green list of a row is drawn by the
    processor's own ``_get_greenlist_ids`` from the row's last ``context_width`` tokens (all its
    ``lefthash`` seeding reads), once per distinct context, and reused. With one token of
    context and a vocabulary whose full table of green lists fits in ``cache_mb`` megabytes
    (``vocab_size ** 2`` booleans: 16 MB at 4,096 tokens), the green lists live in that table
    and a step is one gather, with no Python loop over rows; otherwise in an LRU of boolean
    masks of that size.

    Examples
    --------
    >>> from transformers import WatermarkingConfig
    >>> proc = WatermarkingConfig(hashing_key=7).construct_processor(50, "cpu")
    >>> ids, scores = torch.tensor([[1, 2], [3, 2], [4, 9]]), torch.zeros(3, 50)
    >>> bool(torch.equal(CachedGreenlists(proc)(ids, scores), proc(ids, scores)))
    True
    """

    def __init__(self, processor: Any, *, cache_mb: float = 64.0) -> None:
        if getattr(processor, "seeding_scheme", None) != "lefthash":
            raise ConfigError("CachedGreenlists needs a WatermarkLogitsProcessor with lefthash "
                              "seeding (selfhash green lists depend on the scores)")
        self.processor = processor
        self.context_width = int(processor.context_width)
        self.bias = float(processor.bias)
        self.vocab_size = int(processor.vocab_size)
        budget = cache_mb * 2**20
        self.dense = self.context_width == 1 and self.vocab_size**2 <= budget
        self.capacity = max(1, int(budget // self.vocab_size))
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self._table: torch.Tensor | None = None  # (vocab, vocab) green masks, dense mode
        self._known: torch.Tensor | None = None  # (vocab,) which rows of the table are drawn

    def _green(self, context: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the green list after ``context`` (1-D token ids)."""
        green = self.processor._get_greenlist_ids(context)
        mask = torch.zeros(self.vocab_size, dtype=torch.bool, device=context.device)
        mask[green] = True
        return mask

    def _mask(self, context: torch.Tensor) -> torch.Tensor:
        key = tuple(context.tolist())
        mask = self._cache.get(key)
        if mask is not None:
            self._cache.move_to_end(key)
            return mask
        mask = self._green(context)
        self._cache[key] = mask
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return mask

    def _dense_masks(self, last: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) green masks for one token of context each, from the table."""
        if self._table is None or self._table.device != last.device:
            v = self.vocab_size
            self._table = torch.zeros((v, v), dtype=torch.bool, device=last.device)
            self._known = torch.zeros(v, dtype=torch.bool, device=last.device)
        assert self._known is not None
        missing = torch.unique(last[~self._known[last]])
        for token in missing:
            self._table[token] = self._green(token.view(1))
        self._known[missing] = True
        return self._table[last]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] < self.context_width:
            return self.processor(input_ids, scores)  # transformers warns and skips
        if self.dense:
            green = self._dense_masks(input_ids[:, -1])
        else:
            contexts, inverse = torch.unique(
                input_ids[:, -self.context_width :], dim=0, return_inverse=True
            )
            masks = torch.stack([self._mask(c) for c in contexts])  # (contexts, vocab)
            green = masks[inverse]  # (batch, vocab)
        # As the processor does: the bias is added to the first vocab_size columns.
        out = scores.clone()
        out[:, : self.vocab_size] += green.to(scores.dtype) * self.bias
        return out


def _prepare_processors(processors: Sequence[LogitsProcessor]) -> list[LogitsProcessor]:
    from transformers.generation.logits_process import WatermarkLogitsProcessor

    out: list[LogitsProcessor] = []
    for proc in processors:
        if not callable(proc):
            raise ConfigError(f"logits processors must be callables (input_ids, scores) -> "
                              f"scores, got {type(proc).__name__}")
        if isinstance(proc, WatermarkLogitsProcessor) and proc.seeding_scheme == "lefthash":
            proc = CachedGreenlists(proc)
        out.append(proc)
    return out


def _check_prompts(model: Any, prompts: Any, new_tokens: int, batch_size: int) -> torch.Tensor:
    if not isinstance(prompts, torch.Tensor) or prompts.dim() != 2:
        raise InputError(f"prompts must be a 2-D LongTensor (n, prompt_length), got "
                         f"{getattr(prompts, 'shape', type(prompts).__name__)}")
    if prompts.shape[1] < 1:
        raise InputError("prompts need at least one token each")
    for name, value in (("new_tokens", new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    vocab = model.get_output_embeddings().weight.shape[0]
    if prompts.numel():
        low, high = int(prompts.min()), int(prompts.max())
        if low < 0 or high >= vocab:
            raise InputError(f"prompt token ids must be in [0, {vocab}), got {low}..{high}")
    limit = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    if limit is not None and prompts.shape[1] + new_tokens > limit:
        raise ConfigError(
            f"prompt length {prompts.shape[1]} + new_tokens {new_tokens} exceeds the model's "
            f"{limit} positions; use shorter prompts or fewer new tokens"
        )
    return prompts.long()


def _place(model: Any, device: str | None) -> torch.device:
    if device is None:
        return next(model.parameters()).device
    target = torch.device(resolve_device(device))
    model.to(target)
    return target


def _draw(
    logits: torch.Tensor,
    u: torch.Tensor,
    temperature: float,
    top_k: int | None,
    input_ids: torch.Tensor,
    processors: Sequence[LogitsProcessor],
) -> torch.Tensor:
    """One token per row: temperature, top-k, processors, then the inverse CDF at ``u``."""
    scores = logits.float()
    if temperature != 1.0:
        scores = scores / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        values, index = torch.topk(scores, top_k, dim=-1)
        index, order = index.sort(dim=-1)  # keep vocabulary order: the same draw either way
        values = values.gather(1, order)
        if not processors:  # draw among the k tokens only
            return index.gather(1, inverse_cdf(values, u).unsqueeze(1)).squeeze(1)
        scores = torch.full_like(scores, float("-inf")).scatter_(1, index, values)
    for proc in processors:
        scores = proc(input_ids, scores)
    return inverse_cdf(scores, u)


#: Tokens per group in the two-level search of :func:`inverse_cdf`.
_GROUP = 64


def inverse_cdf(scores: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the first token whose cumulative softmax weight exceeds ``u`` times the total.

    Unnormalised weights ``exp(scores - max)`` are summed in float64 in two levels -- groups
    of 64 tokens, then the tokens of the chosen group -- which is exact to float64 rounding
    and four times faster on a CPU than a float64 softmax and cumulative sum over the whole
    vocabulary. Tokens with weight 0 (``-inf`` scores) are never drawn.

    Examples
    --------
    >>> scores = torch.log(torch.tensor([[0.25, 0.5, 0.0, 0.25]]))
    >>> [int(inverse_cdf(scores, torch.tensor([u]))) for u in (0.1, 0.3, 0.74, 0.76)]
    [0, 1, 1, 3]
    """
    rows, vocab = scores.shape
    weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    pad = (-vocab) % _GROUP
    if pad:
        weights = torch.nn.functional.pad(weights, (0, pad))
    groups = weights.view(rows, -1, _GROUP)
    n_groups = groups.shape[1]
    group_cdf = torch.cumsum(groups.sum(dim=-1, dtype=torch.float64), dim=-1)  # (rows, groups)
    target = (u.to(group_cdf.device, torch.float64) * group_cdf[:, -1]).unsqueeze(1)
    g = torch.searchsorted(group_cdf, target, right=True).clamp_(max=n_groups - 1)
    before = torch.where(g > 0, group_cdf.gather(1, (g - 1).clamp(min=0)), 0.0)
    inside = groups.gather(1, g.unsqueeze(-1).expand(rows, 1, _GROUP)).squeeze(1)
    token_cdf = torch.cumsum(inside.double(), dim=-1) + before  # (rows, 64)
    k = torch.searchsorted(token_cdf, target, right=True).clamp_(max=_GROUP - 1)
    token = (g * _GROUP + k).squeeze(1)
    # Float rounding can put the target just past the last positive weight; step back to it.
    token = token.clamp_(max=vocab - 1)
    bad = weights.gather(1, token.unsqueeze(1)).squeeze(1) == 0
    if bool(bad.any()):
        last = vocab - 1 - torch.argmax((weights[:, :vocab].flip(-1) > 0).int(), dim=-1)
        token = torch.where(bad, last, token)
    return token


def sample_continuations(
    model: Any,
    prompts: torch.Tensor,
    new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = None,
    progress: bool = False,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue each prompt by ``new_tokens`` sampled tokens: LongTensor ``(N, p + new_tokens)``.

    Parameters
    ----------
    model : a causal LM (``GPT2LMHeadModel`` or any ``*ForCausalLM``)
    prompts : LongTensor (N, p)
        Prompts of equal length (e.g. the first ``p`` tokens of training blocks); no padding.
    new_tokens : int
        Tokens to add; ``p + new_tokens`` must fit the model's positions.
    temperature : float, default 1.0
        Divides the logits; values near 0 give greedy decoding.
    top_k : int, optional
        Sample among the ``top_k`` most likely tokens only (exactly ``top_k``; of tokens tied
        at the cut, ``torch.topk`` picks).
    logits_processors : sequence of callables
        Each applied as ``scores = proc(input_ids_so_far, scores)`` after temperature and
        top-k (see the module notes); transformers' ``WatermarkLogitsProcessor`` works.
    seed : int, default 0
        Keys the uniforms (see the module notes): row ``i`` step ``t`` always uses the same one.
    batch_size : int, default 256
        Rows per forward pass; does not change the result (beyond float rounding).
    device : str, optional
        Move the model there first (``auto``, ``cpu``, ``cuda``); default: where it is.
    progress : bool, default False
        A progress bar over batches (on a terminal).
    use_cache : bool, default True
        ``False`` recomputes the whole sequence every step (a reference for tests).

    Examples
    --------
    >>> from collapse_eval.text.model import LMRecipe, new_model
    >>> model = new_model(LMRecipe(vocab_size=50, n_embd=16, n_positions=16), seed=0)
    >>> out = sample_continuations(model, torch.tensor([[1, 2], [3, 4], [5, 6]]), 5, seed=1)
    >>> tuple(out.shape), out[:, :2].tolist()
    ((3, 7), [[1, 2], [3, 4], [5, 6]])
    >>> bool(torch.equal(out, sample_continuations(model, torch.tensor([[1, 2], [3, 4], [5, 6]]),
    ...                                            5, seed=1, batch_size=2)))
    True
    """
    from tqdm.auto import tqdm

    prompts = _check_prompts(model, prompts, new_tokens, batch_size)
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ConfigError(f"temperature must be > 0 (use a small value for greedy), got "
                          f"{temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer or None, got {top_k!r}")
    target = _place(model, device)
    processors = _prepare_processors(logits_processors)
    n, p = prompts.shape
    out = torch.empty((n, p + new_tokens), dtype=torch.long)
    if n == 0:
        return out
    out[:, :p] = prompts
    uniforms = _uniforms(seed, n, new_tokens)
    was_training = model.training
    model.eval()
    starts = range(0, n, batch_size)
    bar = tqdm(total=n, unit="seq", desc="sample", disable=None if progress else True)
    try:
        with torch.inference_mode(), _legacy_cache_argument():
            for start in starts:
                stop = min(start + batch_size, n)
                ids = out[start:stop].to(target)
                u = uniforms[start:stop].to(target)
                _sample_batch(model, ids, p, u, temperature, top_k, processors, use_cache)
                out[start:stop] = ids.cpu()
                bar.update(stop - start)
    finally:
        bar.close()
        model.train(was_training)
    return out


@contextlib.contextmanager
def _legacy_cache_argument() -> Iterator[None]:
    """Silence transformers' notice that ``past_key_values`` is deprecated for ``cache``.

    Measured with transformers 5.23: GPT-2's forward ignores ``cache=`` (the step is computed
    without its context, so the logits are wrong) while ``past_key_values=`` works, so the
    sampler keeps the argument that gives the right answer and spares users a warning per
    generation. Revisit when the pin moves past the removal announced for 5.40.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*past_key_values.*",
                                    category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)


def _uniforms(seed: int, n: int, steps: int) -> torch.Tensor:
    """(n, steps) uniforms in (0, 1); element (i, t) depends on (seed, i, t) only.

    Each row gets its own counter stream keyed by (seed, row), so neither the number of rows
    nor the number of steps changes a row's numbers.
    """
    from collapse_eval.rng import ChainRandom

    row_keys = ChainRandom([seed]).bits(0, SAMPLE_STREAM, n)[0].tolist()
    return ChainRandom(row_keys).uniform(0, SAMPLE_STREAM, (steps,))


def _sample_batch(
    model: Any,
    ids: torch.Tensor,
    p: int,
    u: torch.Tensor,
    temperature: float,
    top_k: int | None,
    processors: Sequence[LogitsProcessor],
    use_cache: bool,
) -> None:
    """Fill ``ids[:, p:]`` in place (``ids`` holds the prompts in its first ``p`` columns)."""
    total = ids.shape[1]
    if use_cache:
        output = model(input_ids=ids[:, :p], use_cache=True)
        past = output.past_key_values
    else:
        output = model(input_ids=ids[:, :p], use_cache=False)
    logits = output.logits[:, -1]
    for t in range(p, total):
        token = _draw(logits, u[:, t - p], temperature, top_k, ids[:, :t], processors)
        ids[:, t] = token
        if t + 1 == total:
            break
        if use_cache:
            output = model(input_ids=token[:, None], past_key_values=past, use_cache=True)
            past = output.past_key_values
        else:
            output = model(input_ids=ids[:, : t + 1], use_cache=False)
        logits = output.logits[:, -1]


def beam_generate(
    model: Any,
    prompts: torch.Tensor,
    new_tokens: int,
    *,
    num_beams: int = 5,
    batch_size: int = 16,
    logits_processors: Sequence[LogitsProcessor] = (),
    repetition_penalty: float | None = None,
    device: str | None = None,
    progress: bool = False,
    **generate_kwargs: Any,
) -> torch.Tensor:
    """Beam-search continuations with ``model.generate`` (the paper's setting: 5 beams).

    Returns LongTensor ``(N, p + new_tokens)``. Exactly ``new_tokens`` are generated per
    prompt: the end-of-text token is an ordinary token inside a block stream, so it does not
    stop generation (the model's ``eos_token_id`` is switched off for the call).
    ``repetition_penalty`` (the paper also ran 3.0) and any other ``generate_kwargs`` go to
    ``generate``; processors are passed as its ``logits_processor``. Deterministic (no
    sampling).
    """
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, LogitsProcessorList

    prompts = _check_prompts(model, prompts, new_tokens, batch_size)
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ConfigError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    target = _place(model, device)
    pad = model.config.pad_token_id
    if pad is None:
        pad = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0
    config = GenerationConfig(
        num_beams=num_beams,
        do_sample=False,
        max_new_tokens=new_tokens,
        repetition_penalty=repetition_penalty,
        pad_token_id=pad,
        **generate_kwargs,
    )
    n, p = prompts.shape
    out = torch.empty((n, p + new_tokens), dtype=torch.long)
    was_training = model.training
    # generate() fills an unset eos_token_id from the model's generation config, so the
    # model's own is switched off for the call (and restored).
    model_eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    model.eval()
    bar = tqdm(total=n, unit="seq", desc="beam", disable=None if progress else True)
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                ids = prompts[start : start + batch_size].to(target)
                generated = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=config,
                    logits_processor=LogitsProcessorList(list(logits_processors)),
                )
                out[start : start + ids.shape[0]] = generated.cpu()
                bar.update(ids.shape[0])
    finally:
        bar.close()
        model.generation_config.eos_token_id = model_eos
        model.train(was_training)
    return out
