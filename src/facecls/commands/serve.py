"""`facecls serve model=PATH [host=127.0.0.1 port=8000]`: a checkpoint or an exported model behind an
HTTP API (FastAPI + uvicorn) with request batching and a page to try it."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors


@reports_user_errors
def main(cfg: DictConfig) -> None:
    from facecls.serve.server import run_server

    run_server(cfg)
