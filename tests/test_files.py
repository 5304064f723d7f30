"""Output directories get the mode any new directory gets (0777 less the umask), not mkdtemp's 0700: another user,
or a CI container running as another uid, must be able to read an export or a report."""

import contextlib
import os
import stat
from pathlib import Path

import pytest
from conftest import run_edgekit

from edgekit.core.files import default_dir_mode, staged_directory


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_a_staged_directory_gets_the_umask_mode(tmp_path, mask):
    final = tmp_path / "out"
    with umask(mask):
        assert default_dir_mode() == 0o777 & ~mask
        with staged_directory(final) as stage:
            assert mode(stage) == 0o777 & ~mask  # readable while it is written, too
            (stage / "inner").mkdir()
            (stage / "inner" / "x.txt").write_text("x")
        # replacing an existing directory (the renameat2 swap) keeps the new directory's mode
        with staged_directory(final, force=True) as stage:
            (stage / "y.txt").write_text("y")
    assert mode(final) == 0o777 & ~mask
    assert sorted(p.name for p in final.iterdir()) == ["y.txt"]


def test_an_exported_directory_and_its_files_get_the_umask_mode(tmp_path):
    with umask(0o022):
        done = run_edgekit("export", "mobilenet_v2", "--width", "0.35", "--resolution", "32", "--format", "onnx",
                           "--out", str(tmp_path / "export"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "export"
    assert mode(out) == 0o755
    files = [p for p in out.iterdir() if p.is_file()]
    assert files and all(mode(p) == 0o644 for p in files), {p.name: oct(mode(p)) for p in files}
    assert (out / "manifest.json").is_file()


_HOLD = """
import sys, time
from pathlib import Path
from edgekit.core.files import output_lock
with output_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_an_output_held_by_another_process_is_refused_with_its_pid_and_the_lock_file_goes(tmp_path):
    import subprocess
    import sys

    from edgekit.core.errors import EdgekitError
    from edgekit.core.files import output_lock

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = rf"being written by another edgekit process \(pid {holder.pid}\)"
        with pytest.raises(EdgekitError, match=refused), output_lock(out):
            pass
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    assert not (tmp_path / ".run.lock").exists()
    with output_lock(out):  # free again once its holder let go
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())


_COUNT = """
import sys
from pathlib import Path
from edgekit.core.files import waiting_lock
counter = Path(sys.argv[1])
for _ in range(200):
    with waiting_lock(counter.with_suffix(".lock")):
        counter.write_text(str(int(counter.read_text()) + 1))
"""


def test_a_waiting_lock_serializes_read_modify_write_across_processes(tmp_path):
    import subprocess
    import sys

    counter = tmp_path / "count"
    counter.write_text("0")
    workers = [subprocess.Popen([sys.executable, "-c", _COUNT, str(counter)]) for _ in range(3)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0]
    assert counter.read_text() == "600"  # an unlocked read-modify-write loses some increments
