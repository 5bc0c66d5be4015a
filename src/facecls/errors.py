"""User-facing errors: one clear line naming the cause and the fix, never a traceback.

Code raises :class:`UserError` for anything the *user* can fix (a bad path, a bad value,
missing weights). Bugs stay ordinary exceptions and keep their tracebacks.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Callable

log = logging.getLogger(__name__)

# Jobs of the current process that ended with a UserError. A multirun keeps going after a
# failed job (one bad configuration must not kill a sweep); the CLI exits non-zero at the end.
failed_jobs: list[str] = []


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


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # pragma: no cover - hydra internals changed; be conservative
        return False


def unwrap_instantiation(err: BaseException) -> BaseException:
    """The error raised inside a class that ``hydra.utils.instantiate`` built (Hydra wraps it
    in an InstantiationException), or ``err`` itself."""
    from hydra.errors import InstantiationException

    return err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ is not None else err


def instantiate(config, *, what: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` where a UserError raised by the target stays a one-line
    UserError, and (when ``what`` names the thing) wrong arguments become one too."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = unwrap_instantiation(err)
        if isinstance(cause, UserError):
            raise cause from None
        if what and isinstance(cause, (TypeError, ValueError)):
            raise UserError(f"cannot build {what}: {cause} — check its overrides.") from None
        raise


def as_user_error(err: Exception) -> UserError | None:
    """Config mistakes that surface as OmegaConf/Hydra errors, rephrased as one line."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(unwrap_instantiation(err), (UserError, MissingMandatoryValue)):
        err = unwrap_instantiation(err)
    if isinstance(err, UserError):
        return err
    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", "") or "a required value"
        if key == "data.source.root":
            key = "data.root"
        return UserError(f"{key} is not set — give it on the command line, e.g. {key}=/path/to/faces"
                         if key == "data.root" else f"{key} is not set — give it on the command line: {key}=…")
    return None


def exit_with(message: str, code: int = 2) -> None:
    """Print ``facecls: error: <message>`` on stderr and exit."""
    sys.stderr.write(f"facecls: error: {one_line(message)}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def reports_user_errors(task: Callable[..., Any] | None = None, *, failure_value: Any = None):
    """Wrap a Hydra task function so a UserError becomes one line on stderr.

    In a single run the process exits with status 2 (or the error's own exit code). In a
    multirun the error is logged (so it lands in the job's log file too), the job is
    recorded as failed and the sweep goes on with the next job; the job returns
    ``failure_value`` (or a stopped run's own value), so a sweeper always gets a number.
    """
    if task is None:
        return functools.partial(reports_user_errors, failure_value=failure_value)

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return task(*args, **kwargs)
            except Exception as err:
                raise (as_user_error(err) or err) from None
        except UserError as err:
            if in_multirun():
                log.error("facecls: error: %s", one_line(str(err)))
                if not isinstance(err, RunStopped):
                    failed_jobs.append(one_line(str(err)))
                value = getattr(err, "value", None)
                return failure_value if value is None else value
            exit_with(str(err), code=err.exit_code)
        except KeyboardInterrupt:
            exit_with("interrupted by the user (Ctrl-C).", code=130)

    return wrapper
