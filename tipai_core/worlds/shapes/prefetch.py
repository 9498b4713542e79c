"""Training batches rendered ahead in worker processes.

Every batch of the ShapesWorld trainers is a pure function of its step, so rendering them out of
order in other processes cannot change them: the GPU (or the CPU's math threads) never waits on the
renderer, and the run stays the recipe's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")


def prefetched(make: Callable[[int], T], first: int, last: int, workers: int) -> Generator[T, None, None]:
    """``make(step)`` for steps first..last-1, in order; with ``workers`` > 0 made ahead in that many
    processes (``make`` must pickle: a module-level function or a ``functools.partial`` of one)."""
    if workers <= 0:
        for step in range(first, last):
            yield make(step)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn: the workers never inherit a CUDA context; they render on the CPU only
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        ahead = 4 * workers
        futures = {s: pool.submit(make, s) for s in range(first, min(last, first + ahead))}
        for step in range(first, last):
            if step + ahead < last:
                futures[step + ahead] = pool.submit(make, step + ahead)
            yield futures.pop(step).result()
