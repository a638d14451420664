"""Handing freed heap memory back to the operating system inside long inference loops: a safety net.

glibc's malloc keeps freed blocks in its heap, and after a large free it raises its mmap threshold, so later
large tensors come from the heap too. A loop whose tensors grow a little every batch cannot reuse the holes
its earlier, smaller batches left, and its resident memory grows with the number of batches: length-sorted
extraction run shortest first grew by +1.1 / +2.2 / +4.8 GiB of anonymous memory at 1k / 4k / 16k clips for a
32-d wav2vec2 (bench/bench_scaling.py, 2026-12-05). ``acft.device.embed_cache_clips`` therefore runs the
longest batch first, so that every later batch fits in memory an earlier one freed (100 batches of distinct
lengths, same model, 2-core AMD EPYC: shortest first +1,291 MiB and still growing, longest first +453 MiB,
levelling off at ~545 MiB by 300 batches).

What remains is this safety net for other loops and other length mixes: ``malloc_trim`` whenever more than
``limit`` bytes lie free in the heap, which bounds the drift at the working set plus ``limit``. Trimming is
not free (the trimmed pages fault back in): with shortest-first order it trimmed after 421 of 500 batches and
made a 16k-clip extraction 25 % slower (433 s vs 346 s) while holding it at +1.4 GiB; in longest-first order
it rarely fires, and its cost is one ``mallinfo2`` call per batch. Elsewhere than glibc >= 2.33 it does
nothing.
"""

from __future__ import annotations

import ctypes

FREE_HEAP_LIMIT = 1 << 30  # bytes


class _MallInfo2(ctypes.Structure):
    # struct mallinfo2 (glibc >= 2.33): all size_t, in this order
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]  # fmt: skip


def _glibc():
    """The process's C library if it has mallinfo2 and malloc_trim (glibc >= 2.33), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def free_heap_bytes() -> int | None:
    """Bytes free inside the malloc heap (``mallinfo2().fordblks``); None where that is unknown."""
    return None if _LIBC is None else int(_LIBC.mallinfo2().fordblks)


def release_free_heap(limit: int = FREE_HEAP_LIMIT) -> bool:
    """``malloc_trim(0)`` if more than ``limit`` bytes lie free in the heap; True if it trimmed."""
    free = free_heap_bytes()
    if free is None or free <= limit:
        return False
    _LIBC.malloc_trim(0)
    return True
