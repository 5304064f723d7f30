"""A .tflite file's intermediate tensors computed on a device: `edgekit int8 report --device` runs the FP32 and INT8
files there on the device's own TFLite kernels and reads their layers back, so a kernel that computes something
else on the device (an ARM path the host never runs) shows up layer by layer.

The harness (edgekit/runtime/harness.py --kept-tensors) runs one file over the inputs with every intermediate
tensor kept, on TFLite's built-in kernels (a delegate keeps none), and writes the asked tensors to an .npz that is
copied back; the device's temp directory is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.devices.probe import device_json, probe_device, remote_argv
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.devices.transports import DeviceError, connect
from edgekit.diagnose.report import Int8LayerReport, int8_layer_report
from edgekit.diagnose.tflite_layers import DeviceTensors
from edgekit.runtime.formats import TFLITE


@contextlib.contextmanager
def tensors_on(profile: DeviceProfile) -> Iterator[DeviceTensors]:
    """A DeviceTensors that runs files on `profile`'s device, for as long as the context lasts. The device is
    reached on the first call (so a report's own checks come first), and its temp directory removed at the end."""
    state: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-tensors-") as local:
        pushed: dict[Path, str] = {}

        def workdir() -> str:
            if "workdir" not in state:
                transport = state["transport"] = connect(profile)
                state["where"] = getattr(transport, "where", profile.name)
                state["workdir"] = transport.make_temp_dir()
                info = probe_device(profile, transport, state["workdir"])
                if not any(package in info.get("runtimes", {}) for package in TFLITE.packages):
                    raise DeviceError(f"{state['where']} has no TFLite runtime to run the .tflite files: pip "
                                      "install ai-edge-litert (or tflite-runtime) on the device.")
            return state["workdir"]

        def run(path: Path, indices: list[int], inputs: np.ndarray) -> dict[int, np.ndarray]:
            remote = workdir()
            transport, where = state["transport"], state["where"]
            if path not in pushed:
                pushed[path] = f"{remote}/m{len(pushed)}{TFLITE.suffix}"
                transport.push(path, pushed[path])
            np.save(Path(local) / "inputs.npy", inputs)
            transport.push(Path(local) / "inputs.npy", f"{remote}/inputs.npy")
            argv = [*transport.python, f"{remote}/harness.py", "--model", pushed[path], "--input",
                    f"{remote}/inputs.npy", "--kept-tensors", f"{remote}/tensors.npz",
                    "--tensor-ids", ",".join(map(str, indices))]
            done = transport.run(remote_argv(profile, argv, profile.timeout_s), profile.timeout_s + 30)
            if done.returncode != 0 and "preserve_all_tensors" in done.stderr:
                raise DeviceError(f"the TFLite runtime on {where} cannot keep intermediate tensors, which the "
                                  "report reads: pip install ai-edge-litert on the device.")
            device_json(done, where, "reading the layers")
            transport.pull(f"{remote}/tensors.npz", Path(local) / "tensors.npz")
            with np.load(Path(local) / "tensors.npz") as arrays:
                return {i: arrays[f"t{i}"] for i in indices}

        try:
            yield run
        finally:
            if "workdir" in state:
                with contextlib.suppress(DeviceError):
                    state["transport"].remove_dir(state["workdir"])


def int8_report_on(device: str | None, artifact: Path, **options: Any) -> Int8LayerReport:
    """`edgekit int8 report ARTIFACT [--device NAME]` (int8_layer_report's other options as keywords): with a
    device, the TFLite files' layers are computed by that device's kernels; without, here."""
    if device is None:
        return int8_layer_report(artifact, **options)
    profile = load_profile(device)
    with tensors_on(profile) as run:
        return int8_layer_report(artifact, device=(profile.name, run), **options)
