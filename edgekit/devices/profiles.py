"""Device profiles: a device is data (devices/NAME.yaml), read with a safe loader and a strict schema."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekit import builtin
from edgekit.core.errors import EdgekitError, close_names
from edgekit.core.safe_yaml import MAX_NESTING, yaml_depth
from edgekit.runtime import formats

TRANSPORTS = ("local", "ssh", "adb")
_TOP_KEYS = {"name", "description", "transport", "ssh", "adb", "arch", "threads", "cores", "python", "runtime",
             "timeout_s"}
_SSH_KEYS = {"host", "user", "port", "key", "config_file", "connect_timeout_s"}
_ADB_KEYS = {"serial", "benchmark_model", "adb"}
RUNTIMES = ("auto", *formats.RUNTIMES)


def search_path() -> list[Path]:
    """Where profiles are looked up, first match wins: $EDGEKIT_DEVICES (os.pathsep-separated), the user's
    edgekit directory, ./devices, then the profiles that ship with edgekit."""
    dirs = [Path(p).expanduser() for p in os.environ.get("EDGEKIT_DEVICES", "").split(os.pathsep) if p]
    config = Path(os.environ.get("XDG_CONFIG_HOME", "~/.config")).expanduser()
    dirs += [config / "edgekit" / "devices", Path.cwd() / "devices", builtin.DEVICES]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None
    key: str | None = None
    config_file: str | None = None
    connect_timeout_s: int = 10


@dataclass(frozen=True)
class AdbTarget:
    serial: str | None = None
    benchmark_model: str | None = None
    adb: str = "adb"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    transport: str
    description: str = ""
    arch: str | None = None
    threads: tuple[int, ...] = (1,)
    cores: str | None = None
    python: str = "python3"
    runtime: str = "auto"
    timeout_s: int = 900
    ssh: SshTarget | None = None
    adb: AdbTarget | None = None
    source: Path | None = field(default=None, compare=False)


LOCAL = DeviceProfile(name="local", transport="local", description="this machine's CPU")


def _fail(path: Path, problem: str) -> EdgekitError:
    return EdgekitError(f"device profile {path}: {problem}")


def _check_keys(path: Path, section: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(path, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {section}: "
                          f"allowed are {', '.join(sorted(allowed))}.")


def _threads(path: Path, value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise _fail(path, f"threads must be a positive integer or a list of them, not {value!r}.")
    return tuple(values)


def _whole_number(path: Path, key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit() \
            or not lo <= int(value) <= hi:
        raise _fail(path, f"{key} must be a whole number from {lo} to {hi}, not {value!r}.")
    return int(value)


def _ssh_text(path: Path, key: str, value: Any) -> str:
    """A host, user, key file or serial: handed to ssh/scp/adb as an argument, so never one that reads as an
    option (`-oProxyCommand=...`)."""
    text = str(value)
    if not text or text.startswith("-") or any(c in text for c in "\n\r\0"):
        raise _fail(path, f"{key} {text!r} is not a {key.split('.')[-1]}: it must not start with '-' or hold line "
                          "breaks.")
    return text


def parse_cores(mask: str | int | None) -> str | None:
    """A hex CPU mask ('f0', '0xf0'): the cores to pin to. None means no pinning."""
    if mask is None or mask == "":
        return None
    text = (f"{mask:x}" if isinstance(mask, int) else str(mask)).lower().removeprefix("0x")
    try:
        if int(text, 16) <= 0:
            raise ValueError
    except ValueError:
        raise EdgekitError(
            f"cores {mask!r} is not a CPU mask: write hex like f0 (cores 4-7) or 3 (cores 0-1).") from None
    return text


def profile_from_dict(data: Any, path: Path) -> DeviceProfile:
    if not isinstance(data, dict):
        raise _fail(path, "must be a YAML mapping (name:, transport:, ...).")
    _check_keys(path, "the profile", data, _TOP_KEYS)
    transport = data.get("transport")
    if transport not in TRANSPORTS:
        raise _fail(path, f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}.")
    runtime = data.get("runtime", "auto")
    if runtime not in RUNTIMES:
        raise _fail(path, f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
    ssh = adb = None
    if transport == "ssh":
        section = data.get("ssh")
        if not isinstance(section, dict) or not section.get("host"):
            raise _fail(path, "an ssh device needs ssh: {host: NAME} (a host name or a ~/.ssh/config alias).")
        _check_keys(path, "ssh", section, _SSH_KEYS)
        ssh = SshTarget(**{k: _ssh_text(path, k, v) if k in ("host", "user", "key", "config_file")
                           else _whole_number(path, f"ssh.{k}", v, 1, 65535 if k == "port" else 3600)
                           for k, v in section.items() if v is not None})
    if transport == "adb":
        section = data.get("adb") or {}
        if not isinstance(section, dict):
            raise _fail(path, "adb: must be a mapping (serial:, benchmark_model:).")
        _check_keys(path, "adb", section, _ADB_KEYS)
        adb = AdbTarget(**{k: _ssh_text(path, f"adb.{k}", v) for k, v in section.items() if v is not None})
    timeout = _whole_number(path, "timeout_s", data.get("timeout_s", 900), 1, 7 * 24 * 3600)
    return DeviceProfile(
        name=str(data.get("name") or path.stem),
        transport=transport,
        description=str(data.get("description", "")),
        arch=data.get("arch"),
        threads=_threads(path, data.get("threads", 1)),
        cores=parse_cores(data.get("cores")),
        python=str(data.get("python", "python3")),
        runtime=runtime,
        timeout_s=timeout,
        ssh=ssh,
        adb=adb,
        source=path,
    )


def read_profile(path: Path) -> DeviceProfile:
    try:
        text = path.read_text(encoding="utf-8")
        if yaml_depth(text) > MAX_NESTING:
            raise _fail(path, f"is nested more than {MAX_NESTING} levels deep: see devices/README.md for the shape.")
        data = yaml.safe_load(text)
    except OSError as exc:
        raise _fail(path, f"unreadable ({exc.strerror}).") from None
    except UnicodeDecodeError:
        raise _fail(path, "is not UTF-8 text: save it as a UTF-8 YAML file.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise _fail(path, f"is not valid YAML{where}: fix the syntax.") from None
    return profile_from_dict(data, path)


def find_profiles(shadowed: list[Path] | None = None) -> dict[str, Path]:
    """Every profile name and the file it comes from, first match on the search path winning. A profile in the
    working directory's devices/ never replaces a built-in one (it is code: `python:` runs on `edgekit bench`):
    such files are skipped (and listed in `shadowed`) unless named by path or put on $EDGEKIT_DEVICES."""
    builtin_names = {p.stem for p in builtin.DEVICES.glob("*.yaml")} | {"local"}
    here = (Path.cwd() / "devices").resolve()
    trusted = {Path(p).expanduser().resolve() for p in os.environ.get("EDGEKIT_DEVICES", "").split(os.pathsep) if p}
    found: dict[str, Path] = {}
    for directory in search_path():
        for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
            if (path.stem in builtin_names and directory.resolve() == here and here not in trusted
                    and here != builtin.DEVICES.resolve()):
                if shadowed is not None:
                    shadowed.append(path)
                continue
            found.setdefault(path.stem, path)
    return found


def load_profile(name: str) -> DeviceProfile:
    """A profile by name ('rpi4', 'local') or by path ('my-board.yaml')."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise EdgekitError(f"device profile {path} does not exist: give a devices/NAME.yaml file or a name "
                               "from `edgekit devices`.")
        return read_profile(path)
    found = find_profiles()
    if name in found:
        return read_profile(found[name])
    if name == "local":
        return LOCAL
    names = sorted(set(found) | {"local"})
    close = close_names(name, names)
    if close:
        raise EdgekitError(f"unknown device {name!r}: did you mean {', '.join(close)}? (`edgekit devices` lists "
                           "them)")
    raise EdgekitError(f"unknown device {name!r}: known devices are {', '.join(names)}; add devices/{name}.yaml "
                       "(see devices/README.md).")
