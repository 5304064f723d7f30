"""Errors a user can fix. The CLI prints their message as one line and exits with `exit_code`."""


class EdgekitError(Exception):
    """Bad input: the message names the problem and the fix."""

    exit_code = 2
