"""Random draws of the training loop, filled in parallel on the CPU.

torch's CPU generator (mt19937) is sequential: one core fills a draw, at about 2.5 ns a number,
while the others wait, and the draws of LocalZO (m numbers per neuron and step) and of OPZO's
noise (one per neuron and step) take a tenth to a quarter of a conv-net step. A CPU draw of
more than ``CHUNK`` numbers is therefore cut into chunks of ``CHUNK``: chunk i is filled from its
own mt19937 seeded with the i-th of ⌈n / CHUNK⌉ 63-bit words drawn from the caller's generator,
and the chunks are shared among as many threads as torch's intra-op pool has. The numbers depend
on the generator's state and n only, never on the number of threads. Smaller draws, and draws on other devices (whose
generators are parallel already), come straight from the caller's generator.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

Tensor = torch.Tensor

#: numbers per chunk: large enough that seeding its generator (~2 µs) is noise, small enough that
#: the draws of one layer and step spread over the threads
CHUNK = 1 << 16

_local = threading.local()
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
    if _pool is None or _pool_size != workers:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_size = ThreadPoolExecutor(workers, thread_name_prefix="neuroplast-draws"), workers
    return _pool


def fill_(out: Tensor, fill: Callable[[Tensor, torch.Generator | None], object],
          generator: torch.Generator | None) -> Tensor:
    """Fill the contiguous tensor ``out`` in place with ``fill(part, gen)`` (e.g. ``part.normal_(
    generator=gen)``): at once from ``generator`` up to ``CHUNK`` numbers or off the CPU, else chunk
    by chunk from generators seeded by ``generator``, shared among the calling thread and a pool of
    (torch's intra-op thread count − 1) threads."""
    n = out.numel()
    if n <= CHUNK or out.device.type != "cpu" or (generator is not None and generator.device.type != "cpu"):
        fill(out, generator)
        return out
    flat = out.view(-1)
    k = -(-n // CHUNK)
    seeds = torch.empty(k, dtype=torch.int64).random_(generator=generator).tolist()

    def run(lo: int, hi: int) -> None:
        g = _thread_generator()
        for i in range(lo, hi):
            g.manual_seed(seeds[i])
            fill(flat[i * CHUNK:(i + 1) * CHUNK], g)

    threads = torch.get_num_threads()
    workers = max(1, min(threads, k))
    bounds = [k * j // workers for j in range(workers + 1)]
    futures = [_executor(threads - 1).submit(run, bounds[j], bounds[j + 1]) for j in range(1, workers)] \
        if workers > 1 else []
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
