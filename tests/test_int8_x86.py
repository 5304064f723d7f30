"""INT8 ONNX on x86 CPUs without VNNI, where ONNX Runtime's U8S8 kernels saturate pairs of products at int16.

The saturating CPU is emulated: qemu user-mode with -cpu Haswell (AVX2, no VNNI) runs the harness's own ONNX
model wrapper, so the kernels ORT picks are the ones a pre-VNNI Intel or AMD machine runs.
"""

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from blocks import MAX_STEPS_OFF, Block, steps_off

from edgekit.exporting.int8_files import export_int8_onnx
from edgekit.quantization.annotator import QuantSettings
from edgekit.quantization.ptq import quantize_ptq
from edgekit.runtime import harness

REPO = Path(__file__).resolve().parents[1]
ON_X86 = platform.machine().lower() in ("x86_64", "amd64")

RUN_UNDER_QEMU = """
import sys
import numpy as np
from edgekit.runtime import harness
harness.int8_products_saturate = lambda: sys.argv[1] == "exact"
model = harness.OnnxModel(sys.argv[2], threads=1)
out = []
for x in np.load(sys.argv[3]):
    model.set_input(x[None])
    model.invoke()
    out.append(model.output_value())
np.save(sys.argv[4], np.concatenate(out))
"""


@pytest.mark.parametrize(("machine", "flags", "saturates"), [
    ("x86_64", "fpu avx avx2 avx512f avx512bw", True),        # Skylake-SP: AVX-512 without VNNI
    ("x86_64", "fpu avx avx2", True),                         # Haswell, Zen 2/3
    ("x86_64", "fpu avx2 avx512f avx512_vnni", False),        # Cascade Lake, Zen 4
    ("x86_64", "fpu avx2 avx_vnni", False),                   # Alder Lake
    ("x86_64", None, True),                                   # flags unreadable: assume the worst
    ("aarch64", None, False),                                 # udot/sdot and NEON widen: nothing saturates
])
def test_saturating_cpus_are_recognised(monkeypatch, machine, flags, saturates) -> None:
    monkeypatch.setattr(harness.platform, "machine", lambda: machine)
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n" if flags else None
    monkeypatch.setattr(harness, "_read", lambda path: cpuinfo if path == "/proc/cpuinfo" else None)
    assert harness.int8_products_saturate() is saturates


def _qemu_x86() -> str:
    found = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("needs qemu user-mode: sudo apt-get install qemu-user-static")
    subprocess.run(["bash", str(REPO / "tools/apt_host.sh"), "qemu-user-static"], check=True, timeout=600)
    return shutil.which("qemu-x86_64-static") or pytest.fail("qemu-user-static installed no qemu-x86_64-static")


@pytest.mark.skipif(not ON_X86, reason="the saturating kernels are x86's")
def test_int8_onnx_is_exact_on_a_cpu_without_vnni(tmp_path: Path) -> None:
    qemu = _qemu_x86()
    torch.manual_seed(0)
    images = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    quantized = quantize_ptq(Block("residual_relu6").eval(), images, QuantSettings())
    export_int8_onnx(quantized, (3, 16, 16), tmp_path / "b.onnx")
    np.save(tmp_path / "x.npy", images)
    reference = quantized(torch.from_numpy(images)).detach().numpy()
    (tmp_path / "run.py").write_text(RUN_UNDER_QEMU)

    def off(mode: str) -> float:
        out = tmp_path / f"{mode}.npy"
        done = subprocess.run([qemu, "-cpu", "Haswell", sys.executable, str(tmp_path / "run.py"), mode,
                               str(tmp_path / "b.onnx"), str(tmp_path / "x.npy"), str(out)],
                              capture_output=True, text=True, timeout=600, cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
        return steps_off(reference, np.load(out))

    # ORT's default kernels on this CPU: the saturation the session options exist for ...
    assert off("default") > MAX_STEPS_OFF
    # ... and the options edgekit runs every ONNX model with there: the torch int8 model's outputs.
    assert off("exact") <= MAX_STEPS_OFF
