"""numpy's OpenBLAS kernels are chosen from the CPU's flags before any job, bench or test imports numpy
(tunebox/blas.py): an OpenBLAS that does not know the CPU model otherwise runs its generic kernels, 6x
slower on this project's Emerald Rapids VM.

Mutants these tests were run against (each fails at least one):
- `CORE_BY_FLAGS` without AVX-512's BW (a CPU with F/CD/DQ/VL only would get SkylakeX kernels it cannot run);
- `core_for` without the machine check (an arm64 host would get an x86 core type);
- `pin_openblas_core` overwriting a value the user set;
- `pin_openblas_core` setting the variable after numpy is loaded (where it does nothing);
- the `import tunebox` line removed from jobs/__init__.py (jobs/evaluate.py imports numpy before tunebox)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunebox.blas import core_for, cpu_flags, pin_openblas_core

REPO = Path(__file__).resolve().parents[1]
# /proc/cpuinfo's flags of the Emerald Rapids VM (family 6, model 207) OpenBLAS 0.3.23 calls Prescott (shortened)
EMERALD_RAPIDS = frozenset(
    "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512ifma avx512cd avx512bw "
    "avx512vl avx_vnni avx512_bf16 avx512vbmi amx_bf16 avx512_fp16 amx_tile amx_int8".split()
)
HASWELL = frozenset("fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2".split())
SANDY_BRIDGE = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx".split())


@pytest.mark.parametrize(
    "flags, machine, core",
    [
        (EMERALD_RAPIDS, "x86_64", "SkylakeX"),
        (EMERALD_RAPIDS - {"avx512bw"}, "x86_64", "Haswell"),  # AVX-512 F without BW: Knights Landing's set
        (HASWELL, "x86_64", "Haswell"),
        (HASWELL - {"fma"}, "x86_64", None),
        (SANDY_BRIDGE, "AMD64", None),
        (EMERALD_RAPIDS, "aarch64", None),  # Kunpeng, Ascend's hosts: OpenBLAS knows its own
    ],
)
def test_core_type_from_flags(flags, machine, core):
    assert core_for(flags, machine) == core


def test_cpuinfo_flags_of_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n", encoding="utf-8")
    assert cpu_flags(info) == {"fpu", "avx2", "fma"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_a_users_core_type_is_kept():
    env = {"OPENBLAS_CORETYPE": "Zen"}
    assert pin_openblas_core(env) == "Zen"
    assert env == {"OPENBLAS_CORETYPE": "Zen"}


def test_too_late_once_numpy_is_loaded(tmp_path):
    import numpy  # noqa: F401  (loaded in this process; the pin must not pretend)

    info = tmp_path / "cpuinfo"
    info.write_text("flags\t: " + " ".join(sorted(EMERALD_RAPIDS)) + "\n", encoding="utf-8")
    env = {}
    assert pin_openblas_core(env, info) is None
    assert env == {}


def openblas_core_in_child(code: str) -> tuple[str, str]:
    """Run `code` in a fresh interpreter without OPENBLAS_CORETYPE; then report the variable and the core
    numpy's OpenBLAS runs (openblas_get_corename from the library numpy loaded)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    report = (
        "import ctypes, glob, os, numpy\n"
        "lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, 'numpy.libs',"
        " 'libopenblas*'))[0])\n"
        "get = getattr(lib, 'openblas_get_corename64_', None) or lib.openblas_get_corename\n"
        "get.restype = ctypes.c_char_p\n"
        "print(os.environ.get('OPENBLAS_CORETYPE', '-'), get().decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code + "\n" + report],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    return out[-2], out[-1]


def test_a_job_module_runs_the_pinned_kernels():
    """The first import of a job (as `python -m jobs.evaluate` does: the package, then the module, which
    imports numpy before tunebox) leaves numpy's OpenBLAS on the core type this CPU's flags call for."""
    expected = core_for(cpu_flags(), os.uname().machine)
    variable, running = openblas_core_in_child("import jobs.evaluate")
    if expected is None:
        assert variable == "-"
    else:
        assert (variable, running.lower()) == (expected, expected.lower())
