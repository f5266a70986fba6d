"""Model FLOPs per token against torch's own FLOP counter, and the peaks MFU is taken against."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPT2Config, GPT2LMHeadModel

from collapse_eval.text.flops import (
    forward_flops_per_token,
    mfu,
    peak_flops,
    training_flops_per_token,
)


@pytest.mark.parametrize(("width", "layers", "inner", "context"),
                         [(64, 2, None, 32), (48, 3, 80, 16)])
def test_flops_per_token_equal_what_torch_counts(width, layers, inner, context) -> None:
    config = GPT2Config(n_embd=width, n_layer=layers, n_head=2, n_inner=inner, vocab_size=512,
                        n_positions=context, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    ids = torch.randint(0, 512, (3, context), generator=torch.Generator().manual_seed(0))
    tokens = ids.numel()
    with FlopCounterMode(display=False) as forward:
        model(input_ids=ids)
    assert forward.get_total_flops() == pytest.approx(
        tokens * forward_flops_per_token(config, context), rel=1e-9)
    with FlopCounterMode(display=False) as step:
        model(input_ids=ids, labels=ids).loss.backward()
    assert step.get_total_flops() == pytest.approx(
        tokens * training_flops_per_token(config, context), rel=1e-9)


def test_peaks_are_known_for_the_usual_gpus_and_never_guessed() -> None:
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA L40S") is None  # not an L4
    assert peak_flops("Intel(R) Xeon(R) CPU") is None
    assert peak_flops("NVIDIA L40S", peak_tflops=362) == 362e12
    assert mfu(1e6, 6e8, None) is None and mfu(2e6, 6e8, 1.2e15) == 1.0


@pytest.mark.parametrize(("heads", "kv_heads", "inner"), [(6, 2, 80), (4, 4, 64)])
def test_llama_flops_per_token_equal_what_torch_counts(heads, kv_heads, inner) -> None:
    """Grouped-query attention and the gated MLP (SmolLM2's shape) are counted as torch counts
    them; eager attention, since torch's counter does not see the CPU's fused attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=inner, vocab_size=300,
                         tie_word_embeddings=True, attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as forward:
        model(input_ids=ids)
    assert forward.get_total_flops() == pytest.approx(
        ids.numel() * forward_flops_per_token(config, 16), rel=1e-9)
    with FlopCounterMode(display=False) as step:
        model(input_ids=ids, labels=ids).loss.backward()
    assert step.get_total_flops() == pytest.approx(
        ids.numel() * training_flops_per_token(config, 16), rel=1e-9)
