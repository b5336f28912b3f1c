"""Give freed heap memory back to the operating system (glibc's ``malloc_trim``).

Training frees its activations after every step, but glibc keeps the freed pages in its arenas: measured on
the default model (tests/benchmarks/bench_night_memory.py), a process that trained LoRA seeds stayed at
4.5–8.2 GB resident after training, against 3.5 GB once trimmed — and the night runs inside the daemon, so
whatever a night keeps, the serving process keeps until it exits. ``release_free_heap()`` after each
training task and at the end of a night returns it. A no-op where glibc is absent (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018  (glibc only)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def release_free_heap() -> bool:
    """Trim every malloc arena; True when glibc released something."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
