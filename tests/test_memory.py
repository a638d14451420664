"""acft.memory: trimming the malloc heap when too much lies free in it."""

from __future__ import annotations

import numpy as np
import pytest

from acft import memory

glibc = pytest.mark.skipif(memory.free_heap_bytes() is None, reason="needs glibc >= 2.33 (mallinfo2)")


def anonymous_resident_bytes() -> int:
    """RssAnon of this process (Linux): the resident memory a trim can hand back."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024


@glibc
def test_trims_only_above_the_limit_and_hands_the_holes_back():
    # 64 kB blocks live in the heap (below the mmap threshold); freeing every other one leaves holes that the
    # heap cannot return by shrinking its top: only malloc_trim hands their pages back.
    blocks = [np.ones(8_000, dtype=np.float64) for _ in range(4_000)]  # ~256 MB in all
    del blocks[::2]
    free = memory.free_heap_bytes()
    assert free > 100 * 2**20
    before = anonymous_resident_bytes()
    assert not memory.release_free_heap(limit=free + 2**30)
    assert anonymous_resident_bytes() > before - 20 * 2**20  # nothing handed back under the limit
    assert memory.release_free_heap(limit=free // 2)
    assert anonymous_resident_bytes() < before - 80 * 2**20  # most of the ~128 MB of holes went back
    assert sum(float(block[0]) for block in blocks) == len(blocks)  # the live blocks are untouched


def test_does_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_LIBC", None)
    assert memory.free_heap_bytes() is None
    assert not memory.release_free_heap(limit=0)
