"""A process-wide memory setting for the commands that run many large tensor operations."""

from __future__ import annotations


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed large blocks instead of unmapping them (a process-wide setting).

    Every Hessian-vector product allocates and frees many tensors of tens of megabytes; by
    default glibc returns each to the system and page-faults fresh zeroed memory the next time,
    which cost a quarter of the CPU time of the mnist1d CNN's products.  Called by the CLI
    commands only (not by the library functions, which leave the caller's process alone).
    Returns False where it does not apply (not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 28)) and bool(mallopt(m_trim_threshold, 1 << 30))
