"""Counter-based random numbers, one independent stream per chain, on any device.

A recursive experiment runs many chains (seeds) side by side. With one ``torch.Generator`` for
the whole batch, chain 3's numbers would depend on how many other chains ran beside it, a resumed
run would need the generator's state, and CPU and GPU would draw different numbers. Here every
number is a pure function of (chain seed, generation, stream, index): SplitMix64 over a counter,
computed with 64-bit integer tensor ops. So seed 3 gives the same chain whether it runs alone or
among 256, a resumed generation draws exactly what the uninterrupted run drew, and the uniforms are
bit-identical on CPU and GPU (normals agree to rounding of ``log``/``cos``).

Examples
--------
>>> import torch
>>> alone = ChainRandom([3]).uniform(generation=5, stream="sample", shape=(4,))
>>> among = ChainRandom([0, 1, 2, 3]).uniform(generation=5, stream="sample", shape=(4,))
>>> bool(torch.equal(alone[0], among[3]))
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def splitmix64(value: int) -> int:
    """SplitMix64's finaliser on a Python int (the reference the tensor version must match)."""
    z = (value + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64_tensor(z: torch.Tensor) -> torch.Tensor:
    z = z + _signed(_GOLDEN)
    z ^= _shr(z, 30)
    z *= _signed(_M1)
    z ^= _shr(z, 27)
    z *= _signed(_M2)
    z ^= _shr(z, 31)
    return z


def stream_id(stream: str | int) -> int:
    """A stable integer for a named stream (CRC-32 of the name; ints pass through)."""
    return stream if isinstance(stream, int) else zlib.crc32(stream.encode())


def derive_seed(*parts: int | str) -> int:
    """One 64-bit seed from several parts, e.g. (run seed, generation): stable across versions."""
    state = 0
    for part in parts:
        state = splitmix64(state ^ (stream_id(part) & _MASK64))
    return state


class ChainRandom:
    """Random numbers for a batch of chains, each chain keyed by its own seed."""

    def __init__(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> None:
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self._seed_state: torch.Tensor | None = None

    @property
    def chains(self) -> int:
        return len(self.seeds)

    def subset(self, index: Sequence[int]) -> ChainRandom:
        """The streams of some chains only (e.g. the chains still iterating)."""
        return ChainRandom([self.seeds[i] for i in index], self.device)

    def keys(self, generation: int, stream: str | int) -> torch.Tensor:
        """Per-chain ``derive_seed(seed, generation, stream)`` as int64 bits, vectorised."""
        if self._seed_state is None:
            seeds = torch.tensor([_signed(s) for s in self.seeds], dtype=torch.int64,
                                 device=self.device)
            self._seed_state = _splitmix64_tensor(seeds)
        z = _splitmix64_tensor(self._seed_state ^ _signed(generation))
        return _splitmix64_tensor(z ^ _signed(stream_id(stream)))

    def bits(self, generation: int, stream: str | int, count: int) -> torch.Tensor:
        """``count`` raw 64-bit values per chain, shape (chains, count), dtype int64."""
        counter = torch.arange(1, count + 1, dtype=torch.int64, device=self.device)
        return _splitmix64_tensor(self.keys(generation, stream)[:, None]
                                  + counter * _signed(_GOLDEN))

    def uniform(self, generation: int, stream: str | int, shape: tuple[int, ...],
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Uniforms in the open interval (0, 1) from the top 53 bits, shape (chains, *shape)."""
        count = math.prod(shape)
        z = _shr(self.bits(generation, stream, count), 11).to(torch.float64)
        u = (z + 0.5) * 2.0**-53
        return u.reshape(self.chains, *shape).to(dtype)

    def normal(self, generation: int, stream: str | int, shape: tuple[int, ...],
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Standard normals by Box-Muller, two per 64-bit value (32 bits per uniform)."""
        count = math.prod(shape)
        z = self.bits(generation, stream, (count + 1) // 2)
        u1 = (_shr(z, 32).to(torch.float64) + 0.5) * 2.0**-32
        u2 = ((z & 0xFFFFFFFF).to(torch.float64) + 0.5) * 2.0**-32
        radius = torch.sqrt(-2.0 * torch.log(u1))
        angle = 2.0 * math.pi * u2
        pairs = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)
        return pairs.reshape(self.chains, -1)[:, :count].reshape(self.chains, *shape).to(dtype)

    def permutation_keys(self, generation: int, stream: str | int, n: int) -> torch.Tensor:
        """Random sort keys (int64) whose argsort is a uniform random permutation per chain."""
        return self.bits(generation, stream, n)
