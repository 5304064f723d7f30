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
