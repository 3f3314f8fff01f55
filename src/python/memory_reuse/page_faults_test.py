"""The allocator keeps freed memory: a loop that allocates and frees photo-sized buffers stops faulting.

Run in a fresh interpreter each time, because the thresholds are process-wide and cannot be undone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from memory_reuse import keep_freed_memory

# A server with a few requests in flight: each round holds 1 to 4 requests' buffers at once (a
# decoded 1000×800 RGB photo, 2.4 MB, and its tensor, 1 MB), then frees them. The changing amount
# of live memory is what makes glibc's moving thresholds give memory back and fault it in again.
_PROGRAM = textwrap.dedent(
    """
    import resource, sys
    from memory_reuse import keep_freed_memory
    tuned = keep_freed_memory() if sys.argv[1] == "keep" else False
    def rounds(n):
        for i in range(n):
            held = [(bytearray(2_400_000), bytearray(1_070_000)) for _ in range(1 + i % 4)]
            del held
    rounds(8)  # let the default thresholds settle first, as they would in a running server
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(200)
    print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200)
    """
)


def _faults_per_round(mode: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return out[0] == "True", float(out[1])


def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    tuned, kept = _faults_per_round("keep")
    assert tuned, "keep_freed_memory() did not apply on this glibc system"
    _, default = _faults_per_round("default")
    # 1 to 4 × 3.4 MB is 850 to 3,400 pages per round: glibc's default faults in most of them anew.
    assert default > 300, f"the default allocator faulted only {default} pages per round"
    assert kept < 5, f"{kept} page faults per round with the memory kept"


def test_zero_leaves_the_allocator_alone() -> None:
    assert keep_freed_memory(0) is False


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more bytes"):
        keep_freed_memory(-1)


# A burst of large images freed behind small objects that stay (so the heap cannot simply shrink
# from the top): the memory is kept for reuse, until it is given back.
_BURST = textwrap.dedent(
    """
    from memory_reuse import give_back_freed_memory, keep_freed_memory

    def rss_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))

    keep_freed_memory()
    big, small = [], []
    for _ in range(24):
        big.append(bytearray(b"\x01") * (16 * 1024 * 1024))  # written, so resident
        small.append(bytearray(b"\x01") * 4096)  # above pymalloc's 512 bytes: from the same heap
    del big
    kept = rss_mib()
    given = give_back_freed_memory()
    print(kept, given, rss_mib())
    """
)


def test_freed_memory_is_given_back_on_request() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _BURST], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    kept, given, after = int(out[0]), out[1] == "True", int(out[2])
    # 24 × 16 MiB = 384 MiB freed; kept in the process until given back.
    assert kept > 300, f"only {kept} MiB resident after the burst: was the memory kept at all?"
    assert given
    assert after < kept - 300, f"{kept} MiB before giving back, {after} MiB after"
