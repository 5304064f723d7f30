"""How edgekit reaches a device: local, ssh (any Linux board) and adb (Android). Each one can make a per-run temp
directory, push files into it, run a command (an argv list, quoted for the remote shell), and remove the directory.

Nothing a user typed reaches a remote shell unquoted: remote commands are built with shlex.join, and remote file
names are ones edgekit chose inside a directory made by the device's own mktemp.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgekit.core.errors import EdgekitError
from edgekit.devices.profiles import AdbTarget, DeviceProfile, SshTarget


class DeviceError(EdgekitError):
    """The device could not be reached or did not do what was asked: the message says what to fix."""

    exit_code = 1


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Transport(Protocol):
    name: str
    python: list[str]  # the device's Python as an argv prefix

    def run(self, argv: list[str], timeout: float) -> Completed: ...

    def make_temp_dir(self) -> str: ...

    def push(self, local: Path, remote: str) -> None: ...

    def pull(self, remote: str, local: Path) -> None: ...

    def remove_dir(self, remote: str) -> None: ...


def _run(argv: list[str], timeout: float, what: str) -> Completed:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DeviceError(f"{argv[0]} is not installed: install it (e.g. apt-get install "
                          f"{'adb' if 'adb' in argv[0] else 'openssh-client'}) to reach {what}.") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what} did not answer within {timeout:.0f} s: check it is on and reachable, "
                          "or raise timeout_s in its profile.") from None
    return Completed(done.returncode, done.stdout, done.stderr)


# --- local --------------------------------------------------------------------------------------------------------


class LocalTransport:
    name = "local"

    def __init__(self, profile: DeviceProfile) -> None:
        self.python = [sys.executable] if profile.python == "python3" else shlex.split(profile.python)

    def run(self, argv: list[str], timeout: float) -> Completed:
        return _run(argv, timeout, "the local runner")

    def make_temp_dir(self) -> str:
        return tempfile.mkdtemp(prefix="edgekit-bench-")

    def push(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, remote)

    def pull(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def remove_dir(self, remote: str) -> None:
        shutil.rmtree(remote, ignore_errors=True)


# --- ssh ----------------------------------------------------------------------------------------------------------


def _ssh_options(target: SshTarget) -> list[str]:
    # BatchMode: never prompt (a first-time host key or a passphrase fails clearly instead of hanging).
    # StrictHostKeyChecking is left to the user's ssh config: edgekit never accepts a host key on its own.
    options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={target.connect_timeout_s}",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    if target.config_file:
        options = ["-F", str(Path(target.config_file).expanduser()), *options]
    if target.key:
        options += ["-i", str(Path(target.key).expanduser()), "-o", "IdentitiesOnly=yes"]
    return options


def _ssh_failure(target: SshTarget, stderr: str) -> str | None:
    text = stderr.lower()
    host = target.host
    if "host key verification failed" in text or "no matching host key" in text:
        return (f"the host key of {host} is not in your known_hosts: connect once with `ssh {host}`, check the "
                "fingerprint and accept it (edgekit never accepts host keys by itself).")
    if "remote host identification has changed" in text:
        return (f"the host key of {host} has CHANGED since you last connected: if the device was reinstalled, "
                f"remove the old key with `ssh-keygen -R {host}`; otherwise do not connect.")
    if "permission denied" in text:
        return (f"{host} refused the login: check user and key in the profile (ssh: user:, key:) and that the "
                "public key is in the device's ~/.ssh/authorized_keys.")
    if "could not resolve hostname" in text:
        return f"cannot resolve {host}: check ssh: host: in the profile (a host name, an IP or a ~/.ssh/config alias)."
    for sign in ("connection refused", "connection timed out", "no route to host", "network is unreachable",
                 "operation timed out", "connection closed", "connection reset"):
        if sign in text:
            return f"cannot reach {host} over ssh ({sign}): check the device is on, on the network, and runs sshd."
    return None


class SshTransport:
    name = "ssh"

    def __init__(self, profile: DeviceProfile) -> None:
        assert profile.ssh is not None
        self.target = profile.ssh
        self.python = shlex.split(profile.python)
        self.destination = f"{self.target.user}@{self.target.host}" if self.target.user else self.target.host
        self.where = f"{profile.name} ({self.destination})"

    def _ssh(self) -> list[str]:
        port = ["-p", str(self.target.port)] if self.target.port else []
        # `--` ends ssh's options before the destination: nothing after it is read as an option.
        return ["ssh", *_ssh_options(self.target), *port, "--", self.destination]

    def _checked(self, argv: list[str], timeout: float) -> Completed:
        done = _run(argv, timeout, self.where)
        if done.returncode == 255:
            raise DeviceError(_ssh_failure(self.target, done.stderr)
                              or f"ssh to {self.where} failed: {done.stderr.strip().splitlines()[-1:] or ['?']}")
        return done

    def run(self, argv: list[str], timeout: float) -> Completed:
        # The remote command is one quoted string for the remote shell.
        return self._checked([*self._ssh(), shlex.join(argv)], timeout)

    def make_temp_dir(self) -> str:
        done = self.run(["mktemp", "-d", "/tmp/edgekit-bench.XXXXXX"], 60)
        if done.returncode != 0 or not done.stdout.strip():
            raise DeviceError(f"cannot make a temp directory on {self.where}: {done.stderr.strip()} "
                              "(is /tmp writable and not full?)")
        return done.stdout.strip()

    def push(self, local: Path, remote: str) -> None:
        port = ["-P", str(self.target.port)] if self.target.port else []
        done = self._checked(["scp", "-q", *_ssh_options(self.target), *port, "--", str(local),
                              f"{self.destination}:{remote}"], 600)
        if done.returncode != 0:
            raise DeviceError(f"copying {local.name} to {self.where} failed: {done.stderr.strip()} "
                              "(is the device's disk full?)")

    def pull(self, remote: str, local: Path) -> None:
        port = ["-P", str(self.target.port)] if self.target.port else []
        done = self._checked(["scp", "-q", *_ssh_options(self.target), *port, "--", f"{self.destination}:{remote}",
                              str(local)], 600)
        if done.returncode != 0:
            raise DeviceError(f"copying {Path(remote).name} back from {self.where} failed: {done.stderr.strip()}")

    def remove_dir(self, remote: str) -> None:
        if remote.startswith("/tmp/edgekit-bench."):
            self.run(["rm", "-rf", "--", remote], 60)


# --- adb ----------------------------------------------------------------------------------------------------------


def adb_devices(adb: str = "adb") -> list[tuple[str, str]]:
    """`adb devices` as (serial, state) pairs: state is device, unauthorized, offline, ..."""
    done = _run([adb, "devices"], 30, "the adb server")
    if done.returncode != 0:
        raise DeviceError(f"`adb devices` failed: {done.stderr.strip()}")
    pairs = []
    for line in done.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            pairs.append((parts[0], parts[1]))
    return pairs


def pick_serial(target: AdbTarget) -> str:
    devices = adb_devices(target.adb)
    if target.serial:
        state = dict(devices).get(target.serial)
        if state is None:
            seen = ", ".join(s for s, _ in devices) or "none"
            raise DeviceError(f"adb device {target.serial} is not connected (connected: {seen}): plug it in, or "
                              f"`adb connect {target.serial}` for a network device.")
    else:
        if not devices:
            raise DeviceError("no adb device is connected: plug the phone in with USB debugging on "
                              "(or `adb connect HOST:PORT`), then check `adb devices`.")
        if len(devices) > 1:
            raise DeviceError(f"{len(devices)} adb devices are connected ({', '.join(s for s, _ in devices)}): "
                              "name one with adb: serial: in the device profile.")
        target_serial, state = devices[0]
        return _usable(target_serial, state)
    return _usable(target.serial, state)


def _usable(serial: str, state: str) -> str:
    if state == "unauthorized":
        raise DeviceError(f"adb device {serial} is unauthorized: unlock the phone and accept the USB debugging "
                          "prompt, then run again.")
    if state == "offline":
        raise DeviceError(f"adb device {serial} is offline: reconnect it (or `adb reconnect`) and run again.")
    if state != "device":
        raise DeviceError(f"adb device {serial} is {state}, not ready: wait for it to boot, then run again.")
    return serial


class AdbTransport:
    name = "adb"
    base_dir = "/data/local/tmp/edgekit"

    def __init__(self, profile: DeviceProfile) -> None:
        self.target = profile.adb or AdbTarget()
        self.python = shlex.split(profile.python)
        self.serial = pick_serial(self.target)
        self.where = f"{profile.name} (adb {self.serial})"

    def _adb(self) -> list[str]:
        return [self.target.adb, "-s", self.serial]

    def run(self, argv: list[str], timeout: float) -> Completed:
        done = _run([*self._adb(), "shell", shlex.join(argv)], timeout, self.where)
        if done.returncode != 0 and ("device offline" in done.stderr or "not found" in done.stderr
                                     and self.serial in done.stderr):
            raise DeviceError(f"adb lost {self.where}: {done.stderr.strip()}; reconnect it and run again.")
        return done

    def make_temp_dir(self) -> str:
        done = self.run(["sh", "-c", f"mkdir -p {self.base_dir} && mktemp -d {self.base_dir}/run.XXXXXX"], 60)
        if done.returncode != 0 or not done.stdout.strip():
            raise DeviceError(f"cannot make a temp directory under {self.base_dir} on {self.where}: "
                              f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def push(self, local: Path, remote: str) -> None:
        done = _run([*self._adb(), "push", str(local), remote], 600, self.where)
        if done.returncode != 0:
            raise DeviceError(f"adb push of {local.name} to {self.where} failed: "
                              f"{(done.stderr or done.stdout).strip()} (is the device's storage full?)")

    def pull(self, remote: str, local: Path) -> None:
        done = _run([*self._adb(), "pull", remote, str(local)], 600, self.where)
        if done.returncode != 0:
            raise DeviceError(f"adb pull of {Path(remote).name} from {self.where} failed: "
                              f"{(done.stderr or done.stdout).strip()}")

    def remove_dir(self, remote: str) -> None:
        if remote.startswith(f"{self.base_dir}/run."):
            self.run(["rm", "-rf", remote], 60)


def connect(profile: DeviceProfile) -> Transport:
    kinds = {"local": LocalTransport, "ssh": SshTransport, "adb": AdbTransport}
    return kinds[profile.transport](profile)
