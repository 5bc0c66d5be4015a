"""The wrapper every command's Hydra task runs in: a UserError becomes one line on stderr (or,
in a multirun, a failed job that does not stop the sweep), and the record of failed jobs the
CLI turns into its exit status."""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf.errors import MissingMandatoryValue

from facecls.config.instantiate import unwrap_instantiation
from facecls.errors import RunStopped, UserError, exit_closed_stdout, exit_with, one_line

log = logging.getLogger(__name__)


class FailedJobs:
    """Jobs of the current process that did not end normally. A multirun keeps going after a
    failed job (one bad configuration must not kill a sweep); the CLI exits non-zero at the end."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, line: str) -> None:
        self._lines.append(one_line(line))

    def replace(self, lines: list[str]) -> None:
        """What the sweep dir's files say (jobs in other processes reported their failures there)."""
        self._lines = [one_line(line) for line in lines]

    def clear(self) -> None:
        self._lines = []

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self):
        return iter(self._lines)


failed_jobs = FailedJobs()


def in_multirun() -> bool:
    try:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # pragma: no cover - hydra internals changed; be conservative
        return False


def as_user_error(err: Exception) -> UserError | None:
    """Config mistakes that surface as OmegaConf/Hydra errors, rephrased as one line."""
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
                    failed_jobs.add(str(err))
                value = getattr(err, "value", None)
                return failure_value if value is None else value
            exit_with(str(err), code=err.exit_code)
        except KeyboardInterrupt:
            exit_with("interrupted by the user (Ctrl-C).", code=130)
        except BrokenPipeError:  # stdout closed by its reader: Hydra would print it as a traceback
            exit_closed_stdout()

    return wrapper
