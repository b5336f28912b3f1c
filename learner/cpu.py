"""This machine's CPU as ``/proc/cpuinfo`` describes it: its model name and its instruction-set flags.

The flags pick kernels: bf16 matmuls are native only with AVX512-BF16/AMX (``learner.runtime.resolve_dtype``),
and fbgemm's int8 kernels differ with and without VNNI (``learner.quant.reduce_range``). The night's gate
baseline is reused only on the same CPU model and kernel flags (``service.night.gate_fingerprint``), since a
different kernel may round differently and so decode a different greedy reply.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

CPUINFO = "/proc/cpuinfo"

#: The flags that change which float/int8 kernels run (and so, possibly, a rounding): what the gate baseline's
#: fingerprint records of the CPU beside its model name.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    model: str  # the first processor's "model name" ("" where the file has none: not x86, or unreadable)
    flags: frozenset[str]

    def kernel_flags(self) -> list[str]:
        """Which of ``KERNEL_FLAGS`` this CPU has, in that order."""
        return [flag for flag in KERNEL_FLAGS if flag in self.flags]


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags from the text of ``/proc/cpuinfo``."""
    model: str | None = None
    flags: list[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = value.split()
    return CpuInfo(model or "", frozenset(flags or ()))


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's ``CpuInfo`` (read once); empty where ``/proc/cpuinfo`` cannot be read."""
    try:
        with open(CPUINFO, encoding="ascii", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CpuInfo("", frozenset())
