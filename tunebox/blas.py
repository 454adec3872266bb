"""numpy's OpenBLAS on x86 CPUs it does not know: pick its kernels from the CPU's flags.

numpy 1.26 (MindSpore 2.9 needs numpy < 2) ships OpenBLAS 0.3.23, whose runtime detection falls back to
its generic Prescott kernels on Intel models it has no entry for (OpenBLAS issue #4267, fixed in 0.3.25
by PR #4268). Emerald Rapids (family 6, model 207) is one: on such a 2-core VM numpy's float32 matmul ran
at 31 GFLOP/s with the detected Prescott kernels and at 202 with OPENBLAS_CORETYPE=SkylakeX (n = 2048,
best of 5; torch on the same cores: 230-306). tunebox's numpy work (the CPU decoder of evaluate and chat,
merge, the scale dial) is matmul-bound, so the slip cost evaluate 4x against transformers' generate.

OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads, so `pin_openblas_core` must run before
anything imports numpy in the process: tunebox/__init__.py calls it, and jobs/__init__.py and
benches/__init__.py import tunebox first (tests/conftest.py imports jobs first); child processes inherit the
variable. A value the user set is kept."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Optional

# OpenBLAS core types by the instruction sets their kernels need, best first. AVX-512 F/CD/BW/DQ/VL is
# SkylakeX's set (its sgemm/dgemm kernels are the ones Cooperlake and Sapphire Rapids use as well);
# AVX2 + FMA is Haswell's (Zen 1-3 run those kernels too).
CORE_BY_FLAGS = (
    ("SkylakeX", frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})),
    ("Haswell", frozenset({"avx2", "fma"})),
)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's flags in /proc/cpuinfo (empty where there is none). Reads up to that line only:
    every process that imports tunebox runs this, and the file has a block per core."""
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def core_for(flags: frozenset[str], machine: str) -> Optional[str]:
    """The OpenBLAS core type for a CPU with these flags, or None (not x86-64, or too old to matter)."""
    if machine.lower() not in ("x86_64", "amd64"):
        return None
    return next((core for core, needed in CORE_BY_FLAGS if needed <= flags), None)


def pin_openblas_core(environ=os.environ, cpuinfo: Path = Path("/proc/cpuinfo")) -> Optional[str]:
    """Set OPENBLAS_CORETYPE from the CPU's flags unless it is set already; the value in effect, or None.
    Too late (and so left alone) once numpy is imported in this process."""
    if environ.get("OPENBLAS_CORETYPE"):
        return environ["OPENBLAS_CORETYPE"]
    if "numpy" in sys.modules:
        return None
    core = core_for(cpu_flags(cpuinfo), platform.machine())
    if core:
        environ["OPENBLAS_CORETYPE"] = core
    return core
