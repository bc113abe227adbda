"""Random draws of the training loop, filled in parallel on the CPU.

torch's CPU generator (mt19937) is sequential: one core fills a draw, at about 2.5 ns a number,
while the others wait, and the draws of LocalZO (m numbers per neuron and step) and of OPZO's
noise (one per neuron and step) take a tenth to a quarter of a conv-net step. A CPU draw of more
than ``CHUNK`` numbers is therefore cut into chunks of ``CHUNK``, each filled by its own mt19937
whose whole state (624 words of 32 bits) is drawn from the caller's generator, and the chunks are
shared among as many threads as torch's intra-op pool has. The numbers depend on the generator's
state and n only, never on the number of threads; replaying the caller's generator replays them.
(Seeding each chunk with ``manual_seed`` would not do: torch keeps 32 bits of a seed, so the
chunks of a long run would repeat each other.) Smaller draws, and draws on other devices (whose
generators are parallel already), come straight from the caller's generator.
"""
from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

Tensor = torch.Tensor

#: numbers per chunk: large enough that setting its generator's state (a few µs) is noise, small
#: enough that the draws of one layer and step spread over the threads
CHUNK = 1 << 16

_local = threading.local()
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _forget_pool() -> None:
    """In a forked child (Lava's runtime forks its processes) the parent's pool threads do not exist."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _thread_generator() -> torch.Generator:
    g = getattr(_local, "generator", None)
    if g is None:
        g = _local.generator = torch.Generator()
    return g


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)   # tasks already queued still run
            _pool, _pool_size = ThreadPoolExecutor(workers, thread_name_prefix="neuroplast-draws"), workers
        return _pool


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
    None) or, where torch's state layout is not the known one, (None, k 63-bit seeds). One serial draw:
    a parallel op here would leave torch's OpenMP threads spinning on the core the pool needs."""
    if _state_template() is None:
        return None, torch.empty(k, dtype=torch.int64).random_(generator=generator).tolist()
    return torch.empty((k, _WORDS), dtype=torch.int64).random_(0, 1 << 32, generator=generator), None


def _set_chunk(g: torch.Generator, words: Tensor | None, seeds: list[int] | None, i: int) -> None:
    """Put chunk i's generator state into ``g`` (small serial copies: this runs on the pool threads)."""
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
    by chunk from generators whose states are drawn from ``generator``, shared among the calling
    thread and a pool of (torch's intra-op thread count − 1) threads."""
    n = out.numel()
    if n <= CHUNK or out.device.type != "cpu" or (generator is not None and generator.device.type != "cpu"):
        fill(out, generator)
        return out
    flat = out.view(-1)
    k = -(-n // CHUNK)
    words, seeds = _chunk_states(k, generator)
    inference = torch.is_inference_mode_enabled()   # thread-local: the pool threads take the caller's

    def run(lo: int, hi: int) -> None:
        g = _thread_generator()
        with torch.inference_mode(inference):
            for i in range(lo, hi):
                _set_chunk(g, words, seeds, i)
                fill(flat[i * CHUNK:(i + 1) * CHUNK], g)

    threads = torch.get_num_threads()
    workers = max(1, min(threads, k))
    bounds = [k * j // workers for j in range(workers + 1)]
    pool = _executor(threads - 1) if workers > 1 else None
    futures = [pool.submit(run, bounds[j], bounds[j + 1]) for j in range(1, workers)] if pool else []
    run(bounds[0], bounds[1])   # the calling thread fills the first share
    for f in futures:
        f.result()
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
