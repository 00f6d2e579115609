"""The embedded caption server's llama.cpp is built for one fixed instruction-set level
(scripts/llama_build.sh: x86-64-v3), never for the CPU it was compiled on, and without run-time
CPU dispatch: on every machine it runs the same kernels, so the same prompt gives the same
caption. A native build passed the caption tests here and failed them on a CI machine with
another CPU. The features llama.cpp reports are compile-time flags, so this holds on any CPU."""
import re
from pathlib import Path

import pytest

# x86-64-v3, as built by scripts/llama_build.sh.
FIXED_LEVEL = {"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"}
NEVER = ("AVX512", "AVX_VNNI", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8", "AMX")


def cpu_features() -> dict[str, str]:
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    cpu = next((part for part in info.split("CPU :")[1:]), "")
    return dict(re.findall(r"(\w+) = (\d+)", cpu))


def test_llama_cpp_reports_exactly_the_fixed_instruction_set_level():
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("the fixed build level is defined for x86_64 (scripts/llama_build.sh)")
    features = cpu_features()
    assert features, "llama.cpp reported no CPU backend features"
    enabled = {name for name, on in features.items() if on == "1"}
    isa = enabled - {"LLAMAFILE", "OPENMP", "REPACK"}
    assert isa == FIXED_LEVEL, f"built for {sorted(isa)}, expected x86-64-v3 {sorted(FIXED_LEVEL)}"
    assert not any(name.startswith(NEVER) for name in enabled)


def test_one_cpu_backend_no_runtime_dispatch_variants():
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    cpu_backends = sorted(p.name for p in lib.glob("libggml-cpu*.so"))
    # GGML_CPU_ALL_VARIANTS would ship libggml-cpu-haswell.so, -skylakex.so, ... and pick one
    # at run time by the CPU it finds.
    assert cpu_backends == ["libggml-cpu.so"], cpu_backends
