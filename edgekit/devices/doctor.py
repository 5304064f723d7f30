"""`edgekit devices check NAME`: reach a device, probe it, and say what is missing and how to fix it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.transports import connect
from edgekit.runtime import formats


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # a failed optional check is advice, not a reason to fail

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "required": self.required, "detail": self.detail,
                "fix": self.fix}


def check_device(profile: DeviceProfile) -> tuple[list[Check], dict[str, Any]]:
    """Checks in order; the first that fails stops the rest when they depend on it."""
    from edgekit.devices.probe import adb_properties, probe_device

    checks: list[Check] = []
    try:
        transport = connect(profile)
        workdir = transport.make_temp_dir()
    except EdgekitError as exc:
        return [Check("reachable", False, str(exc))], {}
    checks.append(Check("reachable", True, getattr(transport, "where", profile.name)))
    info: dict[str, Any] = {}
    try:
        if profile.transport == "adb":
            info.update(adb_properties(transport))
            checks.append(Check("abi", info.get("abi") in ("arm64-v8a", "x86_64"), str(info.get("abi")),
                                "edgekit's runtimes need a 64-bit ABI (arm64-v8a)."))
        binary = profile.adb.benchmark_model if profile.adb else None
        if binary:
            exists = Path(binary).expanduser().is_file()
            checks.append(Check("benchmark_model", exists, binary, "" if exists else
                                "build TFLite's benchmark_model for android_arm64 and give its path "
                                "(adb: benchmark_model:)."))
        try:
            info.update(probe_device(profile, transport, workdir))
        except EdgekitError as exc:
            if not binary:
                checks.append(Check("python", False, str(exc),
                                    f"install python3 and numpy on {profile.name}, or set python: in its profile."))
            return checks, info
        expected = profile.arch
        checks.append(Check("arch", expected is None or info["arch"] == expected, info["arch"],
                            "" if expected is None or info["arch"] == expected else
                            f"the profile expects {expected}: is it pointing at the right device?"))
        checks.append(Check("cpu", True, f"{info.get('cpu_model') or 'unknown'}, {info.get('cores')} cores"))
        features = info.get("cpu_features") or {}
        if features.get("flags"):
            dot = features.get("int8_dot_product")
            checks.append(Check("cpu features", True, ", ".join(features["flags"]) + (
                "; 8-bit dot products: yes" if dot else
                "; no 8-bit dot products (VNNI on x86, SDOT on ARM): INT8 runs about as fast as FP32 here")))
        checks.append(Check("python", True, f"{info['python']}, numpy {info['numpy']}"))
        runtimes = info.get("runtimes", {})
        tflite = next((f"{k} {v}" for k, v in runtimes.items() if k in formats.TFLITE.packages), None)
        checks.append(Check("tflite runtime", tflite is not None, tflite or "none",
                            "" if tflite else "pip install ai-edge-litert (or tflite-runtime with numpy<2).",
                            required=False))
        ort = next((v for k, v in runtimes.items() if k in formats.ONNX.packages), None)
        checks.append(Check("onnxruntime", ort is not None, ort or "none", "" if ort else "pip install onnxruntime",
                            required=False))
        if not tflite and not ort and not binary:
            checks.append(Check("any runtime", False, "neither TFLite nor ONNX Runtime",
                                "pip install ai-edge-litert onnxruntime on the device."))
        governors = info.get("governors") or []
        checks.append(Check("governor", governors in ([], ["performance"]), "/".join(governors) or "not exposed",
                            "" if governors in ([], ["performance"]) else
                            "for stable timings: echo performance | sudo tee "
                            "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor", required=False))
        free = info.get("free_mb")
        checks.append(Check("free space", free is None or free > 200,
                            "unknown" if free is None else f"{free:,.0f} MB in the temp dir",
                            "" if free is None or free > 200 else "free some space on the device.",
                            required=False))
    finally:
        with contextlib.suppress(EdgekitError):
            transport.remove_dir(workdir)
    return checks, info
