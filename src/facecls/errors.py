"""User-facing errors: one clear line naming the cause and the fix, never a traceback.

Code raises :class:`UserError` for anything the *user* can fix (a bad path, a bad value,
missing weights). Bugs stay ordinary exceptions and keep their tracebacks. The ground floor: no third-party
imports (the Hydra task wrapper that turns these into exit codes is facecls.config.task).
"""
from __future__ import annotations

import sys


class UserError(Exception):
    """A mistake the user can fix. The message is one line: cause, then the fix."""

    exit_code = 2


class RunStopped(UserError):
    """A run that ended early but cleanly (interrupted, diverged): its files are written."""

    def __init__(self, message: str, exit_code: int = 3, value: float | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.value = value  # what a sweeper gets for this job (finite), see reports_user_errors


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def exit_with(message: str, code: int = 2) -> None:
    """Print ``facecls: error: <message>`` on stderr and exit."""
    sys.stderr.write(f"facecls: error: {one_line(message)}\n")
    sys.stderr.flush()
    raise SystemExit(code)
