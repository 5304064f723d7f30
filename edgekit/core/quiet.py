"""Quiet converters: keep the user's terminal for edgekit's own output."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO

from edgekit.core.errors import DEBUG

CAPTURED_TAIL = 4000  # characters of a failed conversion's own output shown under --debug


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Converters print progress and warnings of their own, some from C++ straight to file descriptors 1 and 2:
    keep the user's terminal for ours. What they printed is discarded on success; when the block fails, its last
    lines are shown under `edgekit --debug` (with the traceback) and kept on the exception as a note."""
    loggers = [logging.getLogger(n) for n in ("", "torch", "torch.onnx", "absl", "litert_torch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        failed: BaseException | None = None
        try:
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
                try:
                    yield
                except BaseException as exc:
                    failed = exc
                    raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            if failed is not None:
                _keep_output(failed, sink, out.getvalue() + err.getvalue())


def _keep_output(exc: BaseException, sink: IO[bytes], python_output: str) -> None:
    sink.seek(0)
    captured = (sink.read().decode(errors="replace") + python_output).strip()[-CAPTURED_TAIL:]
    if not captured:
        return
    if hasattr(exc, "add_note"):
        exc.add_note(f"converter output (last {CAPTURED_TAIL} characters):\n{captured}")
    if DEBUG.enabled:
        print(captured, file=sys.stderr)
