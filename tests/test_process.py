"""vecfmt.process: the malloc setting vecfmt's own processes run with (glibc only)."""

import os
import subprocess
import sys
import textwrap

import pytest

# In a fresh interpreter: free a 16 MiB block (glibc then raises its mmap threshold to 16 MiB), allocate
# 8 MiB and report whether malloc mapped it (mallinfo2().hblks: the blocks served by mmap).
PROBE = textwrap.dedent("""
    import ctypes, sys
    from vecfmt.process import map_large_blocks

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    applied = map_large_blocks() if sys.argv[1] == "apply" else False
    libc.free(libc.malloc(16 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(8 << 20)
    print(applied, libc.mallinfo2().hblks - before)
    libc.free(block)
""")


def probe(mode: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"} | env
    run = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=environ)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
                    reason="glibc malloc only")
def test_large_blocks_stay_mapped_after_a_larger_one_was_freed():
    assert probe("leave") == "False 0"  # glibc's own rule: the 8 MiB block comes from the heap
    assert probe("apply") == "True 1"  # mapped: given back to the system when freed
    assert probe("apply", MALLOC_MMAP_THRESHOLD_="33554432") == "False 0"  # the user's own choice stands
