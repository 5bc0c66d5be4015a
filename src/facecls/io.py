"""Atomic file writes: write a temp file beside the target, then rename over it, so a
crash at any moment leaves either the old file or the new one — never a truncated one; a full
disk is one line (DiskFull) with the old file intact. The check every command makes of its
output place before the work (check_writable_dir), and the one CSV writer every table goes through."""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from facecls.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: run dirs are not locked
    fcntl = None

_UMASK = os.umask(0)
os.umask(_UMASK)


class CannotWrite(UserError, OSError):
    """A file that could not be written where it was asked for (read-only disk, no permission, a
    file in the way). A UserError (one line for the CLI) and an OSError, so code that can go on
    without the file — a cache — keeps going with its ``except OSError``. ``strerror`` is the
    short reason, str() the whole line."""

    def __init__(self, path: Path, code: int, reason: str, fix: str = "write elsewhere"):
        OSError.__init__(self, code, reason)
        self.message = f"could not write '{path}': {reason} — {fix}; the previous '{path.name}', if there was " \
                       "one, is intact."

    def __str__(self) -> str:
        return self.message


class DiskFull(CannotWrite):
    """A write that ran out of disk space: what was needed and what is free."""

    def __init__(self, path: Path, need: int | None, free: int | None, at_least: bool = False):
        written = f"needed {'more than' if at_least else 'about'} {human_bytes(need)}, " if need else ""
        free_text = human_bytes(free) if free is not None else "?"
        super().__init__(path, errno.ENOSPC, f"no space left on the disk ({written}{free_text} free)",
                         "free some space or write elsewhere")


def human_bytes(count: int | float | None) -> str:
    count = float(count or 0)
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"  # pragma: no cover - the loop returns


# What torch.save raises on a full disk is not an OSError: its zip writer reports a short write
# as RuntimeError "[enforce fail at inline_container.cc…] unexpected pos …" / "file write failed".
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "inline_container")


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return isinstance(err, RuntimeError) and any(marker in str(err) for marker in _TORCH_WRITE_FAILURES)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_writable_dir(path: str | os.PathLike, *, need_bytes: int = 0, what: str = "output",
                       fix: str = "pass out=DIR on a writable disk") -> Path:
    """Check an output place *before* the work (which may take minutes) rather than fail at
    its end: ``path`` is (or can be made) a folder, a file can be created in it, and it has
    ``need_bytes`` free. Each failure is one UserError naming the place, the cause and ``fix``.
    Returns the folder (created when missing)."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write the {what} to '{path}': '{existing}' is a file, not a folder — {fix}.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".facecls-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"cannot write the {what} into '{path}' ({(err.strerror or str(err)).lower()}) — "
                        f"{fix}.") from None
    free = _free_bytes(path)
    if need_bytes and free is not None and free < need_bytes:
        raise UserError(f"'{path}' has {human_bytes(free)} free but the {what} needs about {human_bytes(need_bytes)} "
                        f"— free some space or {fix}.")
    return path


_held_locks: dict[str, int] = {}  # folder → the open lock file; held until this process ends


def lock_dir(folder: str | os.PathLike, fix: str) -> None:
    """Claim ``folder`` for this process (``.facecls.lock``, an flock the system drops when the
    process ends, however it ends): a second process asking for it gets one line naming the
    first one's PID, instead of both writing the same files."""
    folder = Path(folder).expanduser().absolute()
    if str(folder) in _held_locks or fcntl is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".facecls.lock", os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        raise UserError(f"'{folder}' is in use by another facecls process (PID {holder}) — wait for it to end, "
                        f"or {fix}.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held_locks[str(folder)] = fd


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb",
                 need_bytes: int | None = None, direct: bool = False) -> Path:
    """Call ``write(fileobj)`` on a temp file in the target's folder, then rename it into place.
    A full disk (whatever the writer raises for it) is :class:`DiskFull`, a place that cannot be
    written :class:`CannotWrite`; either way the target is untouched. ``direct``: binary writes
    past the page cache (facecls.direct_write; NoDirectIO where the file system has none)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(path, need_bytes, _free_bytes(path.parent) if path.parent.is_dir() else None) from None
        raise CannotWrite(path, err.errno or errno.EIO, (err.strerror or str(err)).lower()) from None
    try:
        _write_and_replace(fd, tmp, path, write, mode, direct)
    except BaseException as err:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, Exception) and is_disk_full(err):
            # the size is known for tensors; otherwise what fitted before the disk ran out
            raise DiskFull(path, need_bytes or written, _free_bytes(path.parent), at_least=not need_bytes) from None
        raise
    return path


def _write_and_replace(fd: int, tmp: str, path: Path, write: Callable[[Any], None], mode: str,
                       direct: bool = False) -> None:
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
    if direct:
        from facecls.direct_write import open_direct

        try:
            target = open_direct(fd)
            write(target)
            target.finish()
            os.fsync(fd)  # the data is on disk already; this makes the size and the name durable
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return
    # A file name from another encoding (kept by Python as surrogates) is written as
    # \udcxx escapes: the text stays valid UTF-8 and never fails on a name.
    text = {"encoding": "utf-8", "newline": "", "errors": "backslashreplace"}
    with os.fdopen(fd, mode, **({} if "b" in mode else text)) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a nest of dicts/lists/tuples (about what torch.save writes)."""
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    nbytes = getattr(obj, "nbytes", None)  # torch tensors and numpy arrays
    return int(nbytes) if isinstance(nbytes, int) else 0


def atomic_torch_save(obj: Any, path: str | os.PathLike, direct: bool = False, crc32: bool = True) -> Path:
    """torch.save, atomically. ``direct``: a big object that nothing reads back soon (a
    checkpoint, rewritten every epoch) goes past the page cache where the file system allows it
    (facecls.direct_write says why); caches that the next run reads stay buffered. ``crc32=False``
    leaves out the zip records' CRC-32: torch.load never checks it (a flipped byte loads
    silently), and computing it took ~0.1 s of CPU per 154 MB here, on the checkpoint writer
    thread that shares the cores with training; only zip tools (``unzip -t``) miss it."""
    import torch

    from facecls.direct_write import MIN_BYTES, NoDirectIO

    def save(f) -> None:
        before = torch.serialization.get_crc32_options()  # a per-thread setting in torch
        torch.serialization.set_crc32_options(crc32)
        try:
            torch.save(obj, f)
        finally:
            torch.serialization.set_crc32_options(before)

    need = tensor_bytes(obj)
    if direct and need >= MIN_BYTES:
        try:
            return atomic_write(path, save, need_bytes=need, direct=True)
        except NoDirectIO:
            pass  # no O_DIRECT here (the temp file is gone): through the page cache as any file
    return atomic_write(path, save, need_bytes=need)


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
