"""Process-wide tuning that only the command line may do (never the library)."""

from __future__ import annotations


#: set (to "1") by the ``lagfit`` command, and so inherited by a sweep's worker processes:
#: only then does a job tune its process; never in a library, notebook or test process
TUNE_PROCESS_ENV = "LAGFIT_TUNE_PROCESS"

#: glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_allocator(mmap_threshold: int = 1 << 28, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed tensor memory in the process (glibc only): a process-wide, opt-in switch.

    By default glibc serves every allocation above ~128 KB–32 MB with a fresh ``mmap`` and
    returns it on free, so each eager op on (N,)-sized tensors pays page faults again; on
    the project's VM that is most of the eager time at 10⁶ points (closed form: 28 ms ->
    3.5 ms, compiled q̈: 0.73 -> 0.46 ms, one thread). Raising both thresholds makes freed
    blocks reusable. The cost: the process keeps its peak heap until exit. Meant for the
    CLI's entry point, not for library use. Returns whether it took effect.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


