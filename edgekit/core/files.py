"""Writing outputs safely: one writer per output (a lock), temporary names that say whose they are, and
an atomic swap of directories, so an interrupted or concurrent run never leaves a half-written result.

Temporary entries are named `.{name}.{pid}.{anything}{tmp|partial|old}`: the pid lets the next run remove
what a killed process left behind (`clean_stale`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edgekit.core.errors import EdgekitError

try:  # POSIX (Linux, macOS): advisory flock
    import fcntl
    msvcrt = None
except ImportError:  # pragma: no cover - Windows: msvcrt's byte-range locks (tested on Linux only)
    fcntl = None  # type: ignore[assignment]
    import msvcrt  # type: ignore[no-redef]

# Windows locks a byte range, and a locked byte cannot be read by others: lock one far past the pid the file holds.
_WINDOWS_LOCK_OFFSET = 1 << 30

_TAIL = r"\.(?P<pid>\d+)\.(?:.*\.)?(?:tmp|partial|old)$"
_held: dict[Path, int] = {}  # locks this process holds, with their depth: a nested stage takes its own lock again


def temp_prefix(name: str) -> str:
    """The prefix for temporary files and directories beside `name` (mkstemp/mkdtemp `prefix=`)."""
    return f".{name}.{os.getpid()}."


def default_file_mode() -> int:
    """0666 less the umask: the mode open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def default_dir_mode() -> int:
    """0777 less the umask: the mode mkdir() would give a new directory (mkdtemp makes 0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; on success it is fsynced and renamed to `path`.

    On any failure (a full disk, Ctrl-C) the temporary file is removed and an existing `path` is untouched.
    Writers that can take a path should: torch.save into a Python file object turns a Ctrl-C that lands
    mid-write into a RuntimeError, where into a path it stays a KeyboardInterrupt.
    """
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())  # mkstemp makes 0600; an output is as readable as any new file
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A file object whose content appears at `path` whole or not at all (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w") as f:
        yield f


def _alive(pid: int) -> bool:
    if os.name == "nt":  # pragma: no cover - os.kill would terminate the process there; ask the kernel instead
        synchronize, still_active = 0x00100000 | 0x0400, 259  # SYNCHRONIZE | PROCESS_QUERY_INFORMATION
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(synchronize, False, pid)
        if not handle:
            return ctypes.get_last_error() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        try:
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == still_active
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(directory: Path, name: str | None = None) -> list[Path]:
    """Remove temporary entries in `directory` (only those for `name`, if given) whose process is gone.

    A directory set aside as `.old` while its replacement was moved in is put back when the replacement
    never arrived (a kill between the two renames of the fallback swap).
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    pattern = re.compile(rf"^\.(?P<name>{re.escape(name) if name else '.+?'}){_TAIL}")
    for entry in directory.iterdir():
        match = pattern.match(entry.name)
        if not match or _alive(int(match["pid"])):
            continue
        final = directory / match["name"]
        if entry.name.endswith(".old") and not final.exists():
            os.replace(entry, final)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def _lock(fd: int, wait: bool) -> bool:
    """Take the exclusive lock on the open file `fd`; False when another process holds it and `wait` is False."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True
    while True:  # pragma: no cover - Windows
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            if not wait:
                return False
            time.sleep(0.05)


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_head(fd: int, size: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, size)


@contextlib.contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold the one-writer lock for the output `path` (a run directory, an artifact directory, a file).

    A second process that wants the same output fails at once with a clear message instead of waiting or
    interleaving. The lock file `.{name}.lock` beside `path` is removed on release.
    """
    path = path.absolute()
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    lock_path = path.parent / f".{path.name}.lock"
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # /proc, /sys, a read-only or missing place: no file can be written there
            raise EdgekitError(f"cannot write to {path.parent} ({exc.strerror}): choose another --out.") from None
        if not _lock(fd, wait=False):
            holder = _read_head(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EdgekitError(
                f"{path} is being written by another edgekit process (pid {holder}): wait for it to finish, "
                "or choose another --out."
            ) from None
        # The previous holder may have removed the file between our open and our lock: then retry on a new one.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[path] = 1
        clean_stale(path.parent, path.name)
        yield
    finally:
        _held.pop(path, None)
        if fcntl is not None:  # unlink while holding it: whoever opened it meanwhile sees it gone once locked, retries
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            os.close(fd)
        else:  # pragma: no cover - Windows cannot unlink an open file; a waiting opener keeps it, which is harmless
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on the file `path` that waits for its holder (read-modify-write of a shared file, such as
    a manifest that bench and check both update); released on exit."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd, wait=True)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):  # not Linux (macOS has no renameat2; Windows no CDLL(None))
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_directory(staging: Path, final: Path) -> None:
    """Move the complete `staging` directory to `final`; an existing `final` is swapped out atomically.

    At every instant `final` is either the old directory or the new one.
    """
    if not final.exists():
        os.replace(staging, final)
        return
    if _renameat2_exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)  # the old directory now lives at the staging name
        return
    old = final.with_name(f"{temp_prefix(final.name)}old")
    os.replace(final, old)  # a kill here is repaired by clean_stale, which moves `old` back
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (see `atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_output(path: Path, text: str) -> None:
    """Write a file the user named (a report, a baseline) atomically; an unwritable place is their error to fix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as exc:
        raise EdgekitError(f"cannot write {path} ({exc.strerror}): choose a writable path.") from None


@contextlib.contextmanager
def staged_directory(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside `final`; on success it replaces `final` atomically.

    The output is locked for the whole time (a second writer fails at once); on any failure (or Ctrl-C) the
    staging directory is removed and an existing `final` is untouched. An existing `final` is only replaced
    when `force` is set.
    """
    final = final.resolve()
    with output_lock(final):
        if final.exists() and not force:
            raise EdgekitError(f"{final} already exists: pass --force to replace it, or --out to write elsewhere.")
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(final.name), suffix=".partial", dir=final.parent))
        try:
            # mkdtemp makes 0700; the output is as readable as any new directory (another user, a CI container)
            os.chmod(staging, default_dir_mode())
            yield staging
            replace_directory(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def check_writable(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a directory, or a folder without write
    permission (a command that fails after its work must not leave other outputs changed)."""
    if path.is_dir():
        raise EdgekitError(f"{option} {path} is a directory: give a file name.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise EdgekitError(f"{option} {path} cannot be written ({folder} is not a writable folder): choose another "
                           "path.")


def edgekit_home() -> Path:
    """The user's edgekit data directory (latency tables, downloaded weights): $EDGEKIT_HOME, else
    $XDG_DATA_HOME/edgekit (~/.local/share/edgekit)."""
    if os.environ.get("EDGEKIT_HOME"):
        return Path(os.environ["EDGEKIT_HOME"]).expanduser()
    return Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share").expanduser() / "edgekit"
