"""Settings for the processes vecfmt itself runs (the CLI, local workers, Ray tasks): never applied by just
importing the library, which may live in someone else's process."""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt() parameter for the size from which malloc serves a block by mmap.
_M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 4 << 20


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Serve blocks of ``threshold`` bytes and more by mmap, so freeing them gives the memory back.

    glibc raises its mmap threshold each time a mapped block is freed, up to 32 MiB; after the first
    batch, a store's batches (tens of MB: ADBC's buffers, NumPy's decoded vectors) come from heap arenas
    that several threads fragment, and RSS grew with the rows read: a 300k x 768 pgvector export peaked
    at 0.95-1.02 GB, 0.74 GB with a fixed threshold (and 1M at 1.09 GB), at the same speed. True when
    set; False elsewhere than glibc, or when the user chose a threshold (``MALLOC_MMAP_THRESHOLD_``)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt, macOS has no such tuning)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
