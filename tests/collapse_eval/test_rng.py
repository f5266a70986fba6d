"""Counter-based chain RNG: a reference implementation, independence and distributions."""

from __future__ import annotations

import math

import torch

from collapse_eval.rng import ChainRandom, _signed, derive_seed, splitmix64

_MASK = (1 << 64) - 1


def test_bits_match_a_pure_python_splitmix64() -> None:
    rng = ChainRandom([0, 7, 2**63 + 5])
    bits = rng.bits(generation=4, stream="sample", count=6)
    for row, seed in enumerate(rng.seeds):
        key = derive_seed(seed, 4, "sample")
        expected = [_signed(splitmix64((key + (i + 1) * 0x9E3779B97F4A7C15) & _MASK))
                    for i in range(6)]
        assert bits[row].tolist() == expected


def test_a_chain_draws_the_same_numbers_alone_or_in_a_batch() -> None:
    batch = ChainRandom(range(50)).normal(3, "x", (7, 2))
    alone = ChainRandom([17]).normal(3, "x", (7, 2))
    assert torch.equal(batch[17], alone[0])
    sub = ChainRandom(range(50)).subset([17, 3]).uniform(3, "x", (5,))
    assert torch.equal(sub[0], ChainRandom([17]).uniform(3, "x", (5,))[0])


def test_streams_and_generations_are_different_numbers() -> None:
    rng = ChainRandom([1])
    a = rng.uniform(1, "a", (100,))
    assert not torch.equal(a, rng.uniform(2, "a", (100,)))
    assert not torch.equal(a, rng.uniform(1, "b", (100,)))


def test_uniforms_and_normals_have_the_right_distribution() -> None:
    rng = ChainRandom(range(4))
    u = rng.uniform(0, "u", (50_000,))
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / u.numel())
    z = rng.normal(0, "z", (50_001,))  # odd count: the last pair is cut
    assert z.shape == (4, 50_001)
    n = z.numel()
    assert abs(float(z.mean())) < 4 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 4 * math.sqrt(2 / n)
    assert abs(float((z.abs() > 3).double().mean()) - 0.0026998) < 4 * math.sqrt(0.0027 / n)
    assert rng.normal(0, "z", (3,), dtype=torch.float32).dtype == torch.float32
