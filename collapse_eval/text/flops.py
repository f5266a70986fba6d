"""Model FLOPs and utilisation: how much of an accelerator's peak a training run turns into work.

Model FLOPs utilisation (MFU; Chowdhery et al., PaLM, 2022) divides the FLOPs the *model* needs
per token, times the tokens per second achieved, by the hardware's peak. It counts what the
architecture requires, not what an implementation happens to spend (recomputation, padding,
masked attention positions), so two training loops on one machine compare directly, and a small
model's low MFU says plainly that it cannot fill a GPU.

For a GPT-2 stack of ``L`` layers of width ``d`` (MLP width ``f``, vocabulary ``V``) reading a
context of ``T`` tokens, one token's forward pass is ``2 (4 d^2 + 2 d f)`` per layer in the
projections, ``4 T d`` per layer in attention (scores and the weighted sum, counted in full as
the matrix products are computed) and ``2 d V`` in the output layer; training is three times the
forward pass (the backward pass computes gradients for activations and weights). Embedding
look-ups, norms and softmaxes are left out, as is usual: they are a few percent at most.

Llama-style models (SmolLM2, the offline model fine-tuned in the paper's setting) differ in two
ways that change the count: grouped-query attention projects keys and values to fewer heads
(``2 d (2 h_q + 2 h_kv) e`` per layer for heads of width ``e``, where GPT-2 has
``h_q e = h_kv e = d``) and the gated MLP has three matrices instead of two (``6 d f``);
attention is ``4 T h_q e``. The same function counts both, from the config's standard names
(``hidden_size``, ``num_hidden_layers``, ...).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["GATED_MLP_TYPES", "PEAK_TFLOPS", "forward_flops_per_token", "mfu", "peak_flops",
           "training_flops_per_token"]

#: Dense (no sparsity) bfloat16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched
#: against ``torch.cuda.get_device_name()`` in this order. Pass ``peak_tflops`` for others.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756.0),
    (r"H100", 989.0),  # SXM
    (r"H200", 989.0),
    (r"A100", 312.0),
    (r"\bL4\b", 121.0),
)


#: ``model_type`` values of dense models whose MLP is gated (``down(act(gate(x)) * up(x))``:
#: three matrices); mixture-of-experts models are not counted by this function
GATED_MLP_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo",
                             "olmo2"})


def forward_flops_per_token(config: Any, context: int) -> float:
    """FLOPs of one token's forward pass through a GPT-2- or Llama-style model (module notes).

    ``config`` is a ``transformers`` config: GPT-2's (``n_embd``, ``n_layer``, ``n_inner`` ...)
    or one with the standard names (``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, ``intermediate_size``);
    ``context`` the tokens each one attends over (the block length).

    Examples
    --------
    >>> from transformers import GPT2Config, LlamaConfig
    >>> config = GPT2Config(n_embd=128, n_layer=2, vocab_size=4096, bos_token_id=0, eos_token_id=0)
    >>> forward_flops_per_token(config, 64)  # the default model, 64-token blocks
    1900544.0
    >>> smollm2 = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
    ...                       num_key_value_heads=3, intermediate_size=1536, vocab_size=49152)
    >>> round(forward_flops_per_token(smollm2, 256) / 1e6, 1)  # SmolLM2-135M, 256-token blocks
    286.7
    """
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None)
    query_width = heads * head_dim if head_dim else d  # GPT-2: the heads split d
    kv_width = query_width * kv_heads / heads
    inner = (getattr(config, "n_inner", None) or getattr(config, "intermediate_size", None)
             or getattr(config, "ffn_dim", None) or 4 * d)
    mlp_matrices = 3 if getattr(config, "model_type", "") in GATED_MLP_TYPES else 2
    attention_projections = 2 * d * (2 * query_width + 2 * kv_width)
    projections = attention_projections + 2 * mlp_matrices * d * inner
    attention = 4 * context * query_width
    return float(layers * (projections + attention) + 2 * d * vocab)


def training_flops_per_token(config: Any, context: int) -> float:
    """FLOPs of one token of a training step: forward and backward, three forward passes."""
    return 3.0 * forward_flops_per_token(config, context)


def peak_flops(device_name: str, peak_tflops: float | None = None) -> float | None:
    """The peak FLOP/s of a device, from ``peak_tflops`` or :data:`PEAK_TFLOPS`; None if unknown
    (a CPU, or a GPU not in the table: then no MFU is claimed)."""
    if peak_tflops is not None:
        return float(peak_tflops) * 1e12
    for pattern, tflops in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return tflops * 1e12
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak (None without a peak).

    Examples
    --------
    >>> mfu(1e6, 6e8, 1e15)  # a million tokens/s at 0.6 GFLOP each, on a 1 PFLOP/s device
    0.6
    """
    if peak is None or peak <= 0:
        return None
    return round(tokens_per_s * flops_per_token / peak, 6)
