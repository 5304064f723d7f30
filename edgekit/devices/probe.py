"""What a device has: push the harness and ask it (`--probe`: arch, CPU, Python, runtimes, free memory), or read a
phone's properties over adb. Shared by `edgekit bench`, `edgekit devices check` and the latency calibration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.transports import DeviceError, Transport
from edgekit.runtime import harness

HARNESS = Path(harness.__file__)


def device_json(done: Any, where: str, what: str) -> dict[str, Any]:
    if done.returncode == 124 or done.returncode == 137:
        raise DeviceError(f"the benchmark on {where} ran past its time limit and was stopped: use a smaller "
                          "--runs/--min-seconds, or raise timeout_s in the device profile.")
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit code {done.returncode}"
        if "No module named 'numpy'" in last:
            raise DeviceError(f"{where} has no numpy for its Python: install it (pip install numpy, or "
                              "apt install python3-numpy) and run again.")
        if done.returncode == 127 or "not found" in last and "python" in last:
            raise DeviceError(f"{where} has no Python to run the harness ({last}): install python3 and numpy, or "
                              "set python: in the device profile (or adb: benchmark_model: for a phone).")
        raise DeviceError(f"{what} failed on {where}: {last}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise DeviceError(f"{what} on {where} printed no result: {done.stdout.strip()[-200:]!r}") from None


def remote_argv(profile: DeviceProfile, argv: list[str], timeout: float) -> list[str]:
    # A hung runner is killed on the device itself, not just the ssh/adb client here.
    return argv if profile.transport == "local" else ["timeout", "-k", "5", str(int(timeout)), *argv]


def probe_device(profile: DeviceProfile, transport: Transport, workdir: str) -> dict[str, Any]:
    where = getattr(transport, "where", profile.name)
    remote_harness = f"{workdir}/harness.py"
    transport.push(HARNESS, remote_harness)
    done = transport.run(remote_argv(profile, [*transport.python, remote_harness, "--probe"], 120), 150)
    return device_json(done, where, "the device probe")


def adb_properties(transport: Transport) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for key, prop in (("abi", "ro.product.cpu.abi"), ("model", "ro.product.model"),
                      ("soc", "ro.soc.model"), ("android", "ro.build.version.release")):
        done = transport.run(["getprop", prop], 30)
        info[key] = done.stdout.strip() or None
    done = transport.run(["uname", "-m"], 30)
    info["arch"] = done.stdout.strip() or None
    info["cpu_model"] = info.get("soc") or info.get("model")
    return info
