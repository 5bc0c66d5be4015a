"""Atomic file writes: write a temp file beside the target, then rename over it, so a
crash at any moment leaves either the old file or the new one — never a truncated one.
Also the one CSV writer every table of facecls goes through."""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from facecls.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temp file in the target's folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        # A file name from another encoding (kept by Python as surrogates) is written as
        # \udcxx escapes: the text stays valid UTF-8 and never fails on a name.
        text = {"encoding": "utf-8", "newline": "", "errors": "backslashreplace"}
        with os.fdopen(fd, mode, **({} if "b" in mode else text)) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV table as text (``\\n`` line ends, quoting as the csv module does for any name)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def safe_torch_load(path: str | os.PathLike, *, what: str, allowed: str, fix: str, **kwargs: Any) -> Any:
    """``torch.load(weights_only=True)``: a file can never run code here. Every failure is one
    UserError naming the file — objects safe loading refuses ('holds objects other than
    ``allowed``'), or a file that is not readable as a ``what`` — followed by ``fix``."""

    import torch

    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        # A real pickle with objects safe loading refuses (torch words it "Unsupported global"
        # or "unsupported GLOBAL", by version); anything else is not a torch.save file at all.
        if "unsupported global" in str(err).lower():
            raise UserError(f"'{path}' holds objects other than {allowed} and was not loaded (safe loading "
                            f"refuses them) — {fix}") from None
        raise UserError(f"'{path}' is not a readable {what} (not a torch.save file) — {fix}") from None
    except Exception as err:  # truncated, not a zip, wrong format, unreadable
        raise UserError(f"'{path}' is not a readable {what} ({type(err).__name__}) — {fix}") from None
