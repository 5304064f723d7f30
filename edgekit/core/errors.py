"""Errors a user can fix, and how every other failure is turned into one line and an exit code."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable

INTERNAL_ERROR = 3


class EdgekitError(Exception):
    """Bad input: the message names the problem and the fix."""

    exit_code = 2


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to a mistyped `name` (difflib's ratio of at least 0.5): for 'did you mean ...?'."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)


class _Debug:
    enabled = False


DEBUG = _Debug()  # set by `edgekit --debug`: unexpected errors keep their traceback

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def classify_error(exc: BaseException) -> EdgekitError | None:
    """The environment failures a user fixes (full disk, no permission, no memory) as an EdgekitError; else None."""
    if isinstance(exc, OSError):
        where = f" writing {exc.filename}" if exc.filename else ""
        if exc.errno in _NO_SPACE:
            return EdgekitError(
                f"no space left{where} ({exc.strerror}): free disk space or choose another --out; "
                "earlier results are intact."
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                         errno.ENAMETOOLONG):
            return EdgekitError(
                f"cannot write to {exc.filename or 'the output'} ({exc.strerror}): choose another --out, "
                "or fix the path or its permissions."
            )
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("DefaultCPUAllocator", "out of memory"))
    ):
        return EdgekitError(
            f"out of memory ({first_line(exc)}): lower --batch-size, the resolution or the width."
        )
    return None
