"""Writing a big file past the page cache (Linux ``O_DIRECT``): what a checkpoint write uses.

A buffered write copies every byte into page-cache pages the kernel must first find (and, after
the old file's were freed, often reclaim or fault back in), and it evicts what other work had
cached. For last.pt (weights + Adam's two moments: 154 MB for the ConvNet, written every epoch)
that path cost 0.9–2.1 s of kernel time per write on our 2-core VMs, against 0.1–0.15 s with
O_DIRECT (docs/performance.md, "Checkpoint writes past the page cache"). O_DIRECT needs the
buffer address, the file offset and each length aligned to the device's block size, so
:class:`DirectFile` stages the bytes in a page-aligned buffer and writes it in whole chunks; the
last chunk is zero-padded and the file truncated to its true length.

Where the platform or the file system has no O_DIRECT, :func:`open_direct` says so
(:class:`NoDirectIO`) and the caller writes through the page cache as before; so does
``FACECLS_DIRECT_IO=0`` (a network file system where direct writes are slower, say).
"""
from __future__ import annotations

import errno
import mmap
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no O_DIRECT either
    fcntl = None

O_DIRECT = getattr(os, "O_DIRECT", None)  # Linux only (macOS has F_NOCACHE, Windows neither)
ALIGN = 4096  # a multiple of every block size O_DIRECT asks for (512 or 4096)
CHUNK = 8 * 2**20  # the staging buffer: big enough that each write is one large request
MIN_BYTES = 16 * 2**20  # below this the page cache costs too little to be worth bypassing

_unsupported_devices: set[int] = set()  # file systems that refused O_DIRECT once: not asked again


class NoDirectIO(Exception):
    """This file system (or platform) does not take O_DIRECT writes: write through the page cache."""


def open_direct(fd: int) -> "DirectFile":
    """Switch the open file ``fd`` (empty, opened for writing) to O_DIRECT and wrap it; raises
    :class:`NoDirectIO` where that is not possible (tmpfs before Linux 6.6, macOS, Windows)."""
    if O_DIRECT is None or fcntl is None:
        raise NoDirectIO("no O_DIRECT on this platform")
    if os.environ.get("FACECLS_DIRECT_IO", "1").strip() == "0":
        raise NoDirectIO("FACECLS_DIRECT_IO=0")
    device = os.fstat(fd).st_dev
    if device in _unsupported_devices:
        raise NoDirectIO("this file system refused O_DIRECT before")
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
    except OSError as err:
        _unsupported_devices.add(device)
        raise NoDirectIO(str(err)) from None
    return DirectFile(fd, device)


class DirectFile:
    """The write side of a file object (``write``, ``flush``) over an O_DIRECT descriptor, for
    ``torch.save``. Call :meth:`finish` after the last write: it writes the padded tail and
    truncates the file to the bytes written. The descriptor stays the caller's to fsync and close."""

    def __init__(self, fd: int, device: int):
        self.fd, self.device = fd, device
        self._buffer = mmap.mmap(-1, CHUNK)  # anonymous maps are page-aligned
        self._view = memoryview(self._buffer)
        self._fill = 0  # bytes staged in the buffer
        self.size = 0  # bytes written by the caller so far

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        done = 0
        while done < len(data):
            take = min(len(data) - done, CHUNK - self._fill)
            self._view[self._fill:self._fill + take] = data[done:done + take]
            self._fill += take
            done += take
            if self._fill == CHUNK:
                self._write_staged(CHUNK)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the staged tail is written by :meth:`finish` (torch.save calls flush)."""

    def finish(self) -> None:
        if self._fill:
            padded = -(-self._fill // ALIGN) * ALIGN
            self._view[self._fill:padded] = bytes(padded - self._fill)
            self._write_staged(padded)
        os.ftruncate(self.fd, self.size)
        self._view.release()
        self._buffer.close()

    def _write_staged(self, length: int) -> None:
        written = 0
        while written < length:
            try:
                count = os.write(self.fd, self._view[written:length])
            except OSError as err:
                if err.errno == errno.EINVAL:  # took the flag, refuses the write: never again here
                    _unsupported_devices.add(self.device)
                    raise NoDirectIO(str(err)) from None
                raise
            if count <= 0 or count % ALIGN:  # a short, unaligned write: the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += count
        self._fill = 0
