"""Start and stop the emulated aarch64 device: sshd (the Raspberry Pi path) and adbd (the Android path) inside the
arm64 root that build.sh made, both on 127.0.0.1 only. Emulated timings are meaningless: use it for plumbing.

    python tools/arm_device/device.py start --root .cache/arm-device/root --state .cache/arm-device/state
    python tools/arm_device/device.py stop --state .cache/arm-device/state

`start` writes STATE/ssh_config (Host edgekit-emulated, its own key and known_hosts: host-key checking stays on),
STATE/devices/{emulated-ssh,emulated-adb}.yaml profiles and STATE/device.json with the PIDs and ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The CPU qemu emulates: a Pi 4's. With qemu's default ("max": SVE, i8mm, ...) XNNPACK picks INT8 kernels that
# compute wrong results under emulation (measured: logits off by 8 on an INT8 MobileNetV2); with cortex-a72 they
# match x86 exactly. Every process on the device inherits it (adbd's children, ssh sessions via ~/.ssh/environment).
QEMU_CPU = "cortex-a72"


@dataclass
class Device:
    root: str
    state: str
    ssh_port: int
    adb_port: int
    sshd_pid: int
    adbd_pid: int
    adb_server_port: int

    @property
    def adb_serial(self) -> str:
        return f"127.0.0.1:{self.adb_port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon for port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def _mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def _mount(root: Path) -> None:
    if not _mounted(root / "proc"):
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    # XNNPACK and onnxruntime crash under qemu when they read the host's x86 cpuinfo.
    if not _mounted(root / "proc/cpuinfo"):
        subprocess.run(["mount", "--bind", str(root / "etc/edgekit-cpuinfo"), str(root / "proc/cpuinfo")],
                       check=True)
    # /sys stays the static one build.sh wrote: the host's sysfs makes XNNPACK's INT8 kernels wrong under qemu.


def _unmount(root: Path) -> None:
    for sub in ("proc/cpuinfo", "proc"):
        while _mounted(root / sub):
            if subprocess.run(["umount", "-l", str(root / sub)], capture_output=True).returncode != 0:
                break


def start(root: Path, state: Path) -> Device:
    if not (root / ".edgekit-device-ready-v2").exists():
        raise RuntimeError(f"{root} is not built: run tools/arm_device/build.sh {root}")
    state.mkdir(parents=True, exist_ok=True)
    _mount(root)
    key = state / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (root / "root/.ssh/authorized_keys").write_text((state / "id_ed25519.pub").read_text())
    os.chmod(root / "root/.ssh/authorized_keys", 0o600)

    ssh_port, adb_port, adb_server_port = _free_port(), _free_port(), _free_port()
    (root / "etc/ssh/sshd_config_edgekit").write_text(
        f"Port {ssh_port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
        "PermitUserEnvironment yes\n")
    (root / "root/.ssh/environment").write_text(f"QEMU_CPU={QEMU_CPU}\n")
    (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "adbd.py", root / "usr/local/bin/edgekit-adbd.py")
    log = open(state / "sshd.log", "ab")  # noqa: SIM115 - owned by the daemon for its lifetime
    env = {**os.environ, "QEMU_CPU": QEMU_CPU}
    sshd = subprocess.Popen(["chroot", str(root), "/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config_edgekit"],
                            stdout=log, stderr=log, start_new_session=True, env=env)
    adb_log = open(state / "adbd.log", "ab")  # noqa: SIM115
    adbd = subprocess.Popen(["chroot", str(root), "python3", "/usr/local/bin/edgekit-adbd.py", "--port",
                             str(adb_port)], stdout=adb_log, stderr=adb_log, start_new_session=True, env=env)
    device = Device(str(root), str(state), ssh_port, adb_port, sshd.pid, adbd.pid, adb_server_port)
    (state / "device.json").write_text(json.dumps(asdict(device)))
    try:
        _wait_port(ssh_port, 60, sshd)
        _wait_port(adb_port, 60, adbd)
    except RuntimeError:
        stop(state)
        raise

    # Host-key checking stays on: the device's own host key goes into a known_hosts file of ours.
    host_key = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    (state / "known_hosts").write_text(f"[127.0.0.1]:{ssh_port} {host_key[0]} {host_key[1]}\n")
    (state / "ssh_config").write_text(
        f"Host edgekit-emulated\n  HostName 127.0.0.1\n  Port {ssh_port}\n  User root\n  IdentityFile {key}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {state / 'known_hosts'}\n  StrictHostKeyChecking yes\n")
    profiles = state / "devices"
    profiles.mkdir(exist_ok=True)
    (profiles / "emulated-ssh.yaml").write_text(
        "name: emulated-ssh\ndescription: emulated aarch64 board (qemu user-mode) over ssh; timings meaningless\n"
        f"transport: ssh\nssh:\n  host: edgekit-emulated\n  config_file: {state / 'ssh_config'}\n"
        "arch: aarch64\nthreads: [1]\ntimeout_s: 600\n")
    (profiles / "emulated-adb.yaml").write_text(
        "name: emulated-adb\ndescription: emulated aarch64 phone (qemu user-mode) over adb; timings meaningless\n"
        f"transport: adb\nadb:\n  serial: {device.adb_serial}\narch: aarch64\nthreads: [1]\ntimeout_s: 600\n")
    adb_connect(device)
    return device


def adb_env(device: Device) -> dict[str, str]:
    """A private adb server port, so no user's adb server is touched."""
    return {**os.environ, "ANDROID_ADB_SERVER_PORT": str(device.adb_server_port)}


def adb_connect(device: Device) -> None:
    env = adb_env(device)
    subprocess.run(["adb", "disconnect", device.adb_serial], env=env, capture_output=True, timeout=60)
    for _ in range(20):
        done = subprocess.run(["adb", "connect", device.adb_serial], env=env, capture_output=True, text=True,
                              timeout=60)
        states = subprocess.run(["adb", "devices"], env=env, capture_output=True, text=True, timeout=60).stdout
        if f"{device.adb_serial}\tdevice" in states:
            return
        time.sleep(0.5)
    raise RuntimeError(f"adb connect {device.adb_serial} failed: {done.stdout} {done.stderr}")


def load(state: Path) -> Device | None:
    path = state / "device.json"
    return Device(**json.loads(path.read_text())) if path.exists() else None


def stop(state: Path) -> None:
    device = load(state)
    if device is None:
        return
    env = adb_env(device)
    subprocess.run(["adb", "kill-server"], env=env, capture_output=True, timeout=60)
    for pid in (device.sshd_pid, device.adbd_pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for pid in (device.sshd_pid, device.adbd_pid):
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
    _unmount(Path(device.root))
    (state / "device.json").unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--root", type=Path, default=Path(".cache/arm-device/root"))
    parser.add_argument("--state", type=Path, default=Path(".cache/arm-device/state"))
    args = parser.parse_args()
    if args.action == "start":
        device = start(args.root.resolve(), args.state.resolve())
        print(json.dumps(asdict(device)))
        print(f"profiles: EDGEKIT_DEVICES={args.state.resolve() / 'devices'}  "
              f"ANDROID_ADB_SERVER_PORT={device.adb_server_port}")
    else:
        stop(args.state.resolve())


if __name__ == "__main__":
    main()
