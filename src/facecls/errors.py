"""User-facing errors: one clear line naming the cause and the fix, never a traceback.

Code raises :class:`UserError` for anything the *user* can fix (a bad path, a bad value,
missing weights). Bugs stay ordinary exceptions and keep their tracebacks. The ground floor: no third-party
imports (the Hydra task wrapper that turns these into exit codes is facecls.config.task).
"""
from __future__ import annotations

import os
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


def safe_text_streams() -> None:
    """stdout/stderr write a name of another encoding (kept by Python as surrogates) as \\udcxx
    escapes: what facecls prints is always valid UTF-8 for the tools that read it."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def exit_closed_stdout() -> None:
    """The reader of stdout went away (`facecls train --help | head -1`): end quietly, as Unix
    tools do on SIGPIPE. stdout is pointed at /dev/null first, so the interpreter's last flush
    does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (captured in-process): nothing to flush
        pass
    raise SystemExit(141)  # 128 + SIGPIPE, what a shell reports for a tool a closed pipe stopped


def exit_with(message: str, code: int = 2) -> None:
    """Print ``facecls: error: <message>`` on stderr and exit."""
    sys.stderr.write(f"facecls: error: {one_line(message)}\n")
    sys.stderr.flush()
    raise SystemExit(code)
