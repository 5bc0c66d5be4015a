"""Start the service: the runner for ``model=``, torch/onnxruntime threads set from the machine, uvicorn on
``host:port`` (127.0.0.1 unless told otherwise). uvicorn's SIGTERM/SIGINT handling stops taking
connections, answers the requests in flight, then runs the app's shutdown. uvicorn then re-raises
the signal to the handler it found installed; :func:`stopped` is that handler, so a stop asked for
(SIGTERM from a process manager, Ctrl-C) ends the process with status 0, not killed by the signal."""
from __future__ import annotations

import asyncio
import logging
import os
import signal

import torch

from facecls.errors import UserError
from facecls.inference.device import select_device
from facecls.inference.runners import open_runner
from facecls.serve.app import Settings, create_app
from facecls.serve.gallery import open_gallery

log = logging.getLogger("facecls.serve")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def settings_from(cfg) -> Settings:
    serve = cfg.serve
    values = {key: serve[key] for key in Settings.__dataclass_fields__ if key in serve and serve[key] is not None}
    values["top_k"] = cfg.top_k
    for key in ("max_batch", "max_files", "top_k", "workers"):
        if key in values and (isinstance(values[key], bool) or not isinstance(values[key], int) or values[key] < 1):
            raise UserError(f"serve.{key}={values[key]} is invalid — give a whole number >= 1.")
    return Settings(**values)


class QuietCancel(logging.Filter):
    """Ctrl-C a second time is uvicorn's force quit: it cancels the requests in flight and the app's
    lifespan, and logs each CancelledError with a traceback. A stop that was asked for is no error,
    so those records are dropped (any other error still shows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        return not str(record.msg).rstrip().endswith("CancelledError")  # the lifespan's traceback as text


_stops: list[str] = []


def stopped(signum: int, frame) -> None:
    """uvicorn re-raises every signal it caught (Ctrl-C twice: twice); the stop is said once."""
    if not _stops:
        log.info("facecls serve: stopped (%s)", signal.Signals(signum).name)
    _stops.append(signal.Signals(signum).name)


def run_server(cfg) -> None:
    try:
        import uvicorn
    except ImportError:
        raise UserError("facecls serve needs the serve extra — pip install 'facecls[serve]'.") from None
    if not cfg.get("model_file"):
        raise UserError("give the model to serve: model=<run dir>/checkpoints/best.pt, or a .onnx / TorchScript "
                        "file from facecls export.")
    if isinstance(cfg.port, bool) or not isinstance(cfg.port, int) or not 0 <= cfg.port < 65536:
        raise UserError(f"port={cfg.port} is invalid — give a TCP port (0 … 65535; 0 = any free port).")
    threads = int(cfg.serve.threads or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    settings = settings_from(cfg)
    far = cfg.serve.get("far")
    runner = open_runner(cfg.model_file, select_device(cfg.device), threads, far=far)
    gallery = open_gallery(cfg.gallery, runner, far) if cfg.get("gallery") else None
    if str(cfg.host) not in LOOPBACK:
        log.warning("Listening on %s: other machines can send photos to this service (faces are personal data).",
                    cfg.host)
    app = create_app(runner, settings, gallery)
    config = uvicorn.Config(app, host=str(cfg.host), port=int(cfg.port), access_log=False, log_config=None,
                            timeout_graceful_shutdown=float(cfg.serve.graceful_shutdown_s), server_header=False)
    log.info("facecls serve: http://%s:%d/ (page), /docs (API), %d thread(s)", cfg.host, cfg.port, threads)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopped)  # the handler uvicorn restores and re-raises to after its shutdown
    logging.getLogger("uvicorn.error").addFilter(QuietCancel())
    uvicorn.Server(config).run()
