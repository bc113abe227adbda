"""Random draws of the training loop in chunks, each from its own generator.

A CPU draw of more than ``CHUNK`` numbers is cut into chunks of ``CHUNK``, each filled by its own
mt19937 whose whole state (624 words of 32 bits) is drawn from the caller's generator. The numbers
depend on the generator's state and n only; replaying the caller's generator replays them. (Seeding
each chunk with ``manual_seed`` would not do: torch keeps 32 bits of a seed, so the chunks of a long
run would repeat each other.) Smaller draws, and draws on other devices, come straight from the
caller's generator. Used by OPZO/ZO noise, Rademacher signs, LocalZO, ASGL, dropout and Poisson input.

The chunks are filled one after the other in the calling thread. Filling them from a pool of
threads was 1.75× faster for 1.6 M numbers on an idle 2-core machine, but not inside a training
step: after every parallel op torch's OpenMP workers spin-wait for 3–10 ms on the other core, so a
pool thread gets no core, and the conv LocalZO step was 6% slower with the pool (OPZO even). The
chunked streams are kept so that seeded runs give the numbers they gave with the pool.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch

Tensor = torch.Tensor

#: numbers per chunk (setting a chunk generator's state costs a few µs: noise against 65536 numbers)
CHUNK = 1 << 16

#: torch's CPU generator state (``get_state``, torch 2.x): a uint64 seed, int left, int seeded, uint64
#: next, then the 624 mt19937 words as uint64, then the cached normal samples
_WORDS, _OFFSET = 624, 24


@functools.lru_cache(maxsize=1)
def _state_template() -> Tensor | None:
    """A fresh generator's state whose mt19937 words sit where ``_OFFSET`` says (checked against the
    reference seeding of seed 1), or None if this torch lays its state out otherwise."""
    state = torch.Generator().manual_seed(1).get_state()
    words, w = [1], 1
    for i in range(1, _WORDS):
        w = (1812433253 * (w ^ (w >> 30)) + i) & 0xFFFFFFFF
        words.append(w)
    expected = torch.tensor(words, dtype=torch.int64).view(torch.uint8)
    if state.numel() < _OFFSET + 8 * _WORDS or not torch.equal(state[_OFFSET:_OFFSET + 8 * _WORDS], expected):
        return None
    return state


def _chunk_states(k: int, generator: torch.Generator | None) -> tuple[Tensor | None, list[int] | None]:
    """(the 624 random mt19937 words of each of k chunk generators [k, 624] drawn from ``generator``,
    None) or, where torch's state layout is not the known one, (None, k 63-bit seeds)."""
    if _state_template() is None:
        return None, torch.empty(k, dtype=torch.int64).random_(generator=generator).tolist()
    return torch.empty((k, _WORDS), dtype=torch.int64).random_(0, 1 << 32, generator=generator), None


def _set_chunk(g: torch.Generator, words: Tensor | None, seeds: list[int] | None, i: int) -> None:
    """Put chunk i's generator state into ``g``."""
    if words is None:
        g.manual_seed(seeds[i])
        return
    state = _state_template().clone()   # set_state needs a tensor of its own (a row view crashes torch)
    state[_OFFSET:_OFFSET + 8 * _WORDS].copy_(words[i].view(torch.uint8))
    g.set_state(state)


def fill_(out: Tensor, fill: Callable[[Tensor, torch.Generator | None], object],
          generator: torch.Generator | None) -> Tensor:
    """Fill the contiguous tensor ``out`` in place with ``fill(part, gen)`` (e.g. ``part.normal_(
    generator=gen)``): at once from ``generator`` up to ``CHUNK`` numbers or off the CPU, else chunk
    by chunk from generators whose states are drawn from ``generator``."""
    n = out.numel()
    if n <= CHUNK or out.device.type != "cpu" or (generator is not None and generator.device.type != "cpu"):
        fill(out, generator)
        return out
    flat = out.view(-1)
    k = -(-n // CHUNK)
    words, seeds = _chunk_states(k, generator)
    g = torch.Generator()   # takes each chunk's state in turn
    for i in range(k):
        _set_chunk(g, words, seeds, i)
        fill(flat[i * CHUNK:(i + 1) * CHUNK], g)
    return out


def _device(generator: torch.Generator | None, device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def normal(shape, generator: torch.Generator | None, device, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """float32 N(mean, std²) of ``shape`` on the generator's device (``device`` without one)."""
    out = torch.empty(shape, device=_device(generator, device))
    return fill_(out, lambda t, g: t.normal_(mean, std, generator=g), generator)


def uniform(shape, generator: torch.Generator | None, device) -> Tensor:
    """float32 U[0, 1) of ``shape``, as ``torch.rand``."""
    out = torch.empty(shape, device=_device(generator, device))
    return fill_(out, lambda t, g: t.uniform_(generator=g), generator)


def words(n: int, generator: torch.Generator | None, device) -> Tensor:
    """n int64 random 32-bit words in [0, 2³²)."""
    out = torch.empty(n, dtype=torch.int64, device=_device(generator, device))
    return fill_(out, lambda t, g: t.random_(0, 1 << 32, generator=g), generator)
