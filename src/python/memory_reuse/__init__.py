"""Keep freed memory for the next request instead of handing it back to the kernel (glibc only).

By default glibc serves big blocks from fresh mmaps and gives freed memory back once the free top of
the heap passes a threshold; both thresholds move as the program runs. A service that allocates and
frees a few MB per request (the gateway: a decoded 1000×800 photo is 2.4 MB, its tensor 1 MB and
its serialised request 1 MB; the model server the same tensor again) then faults those pages in anew
on every request. Measured in the gateway under load: ~650 page faults per image, about a sixth of
its CPU per request (docs/benchmarks.md, "Gateway").

`keep_freed_memory(limit)` fixes both thresholds: blocks up to 32 MiB come from the heap and are
reused, and up to `limit` bytes of free memory stay in each allocator arena. The cost is RSS that
stays near its high-water mark after a burst; `give_back_freed_memory()` (glibc's malloc_trim)
returns what is free once the burst is over.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest threshold glibc accepts on 64-bit. Above Pillow's 16 MiB image blocks, so a decoded
# photo of any size is carved from reusable heap memory rather than mmapped and unmapped each time.
MMAP_THRESHOLD = 32 * 1024 * 1024
DEFAULT_KEEP = 64 * 1024 * 1024


def _libc() -> ctypes.CDLL | None:
    return ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None


def keep_freed_memory(limit: int = DEFAULT_KEEP) -> bool:
    """Set the thresholds for this process; True when done, False when not glibc or `limit` is 0.

    Call it once at startup, before the work begins (it applies to later frees, all threads).
    """
    if limit < 0:
        raise ValueError(f"the memory to keep must be 0 or more bytes, not {limit}")
    libc = _libc()
    if limit == 0 or libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt takes an int: a limit beyond 2 GiB - 1 is that much in effect (never trimmed).
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, min(limit, 2**31 - 1))
    )


def give_back_freed_memory() -> bool:
    """Return the free memory of every allocator arena to the kernel; True if any was returned.

    Takes a few ms per hundred MB: call it when idle, from a worker thread.
    """
    libc = _libc()
    if libc is None:
        return False
    malloc_trim = libc.malloc_trim
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))
