"""``hydra.utils.instantiate`` for facecls: a UserError raised inside the built class stays one
line, and wrong arguments to a named thing become one too."""
from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate

from facecls.errors import UserError


def unwrap_instantiation(err: BaseException) -> BaseException:
    """The error raised inside a class that ``hydra.utils.instantiate`` built (Hydra wraps it
    in an InstantiationException), or ``err`` itself."""
    return err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ is not None else err


def instantiate(config, *, what: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` where a UserError raised by the target stays a one-line
    UserError, and (when ``what`` names the thing) wrong arguments become one too."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = unwrap_instantiation(err)
        if isinstance(cause, UserError):
            raise cause from None
        if what and isinstance(cause, (TypeError, ValueError)):
            raise UserError(f"cannot build {what}: {cause} — check its overrides.") from None
        raise
