"""Run facecls commands for the report, re-using results that are already complete."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

DONE = ".report-done.json"  # written after a command succeeded, with the exact arguments


@dataclass
class Outcome:
    ok: bool
    reused: bool = False
    message: str = ""  # the one-line reason when not ok


@dataclass
class Finished:
    returncode: int
    stderr: str


def facecls(args: list[str], log_file: Path) -> Finished:
    """Run `facecls ARGS` exactly as from a shell, but in this process (a fresh interpreter
    per command would spend seconds importing torch each time); everything it prints goes to
    ``log_file``. Process-wide state a command changes (argv, logging, the RNG) is restored."""

    from facecls.cli import main

    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = (list(sys.argv), list(root.handlers), root.level, torch.get_rng_state())
    # This command runs inside the `facecls report` Hydra app: park its Hydra state meanwhile.
    outer_hydra, outer_config = GlobalHydra.instance().hydra, HydraConfig.instance().cfg
    GlobalHydra.instance().clear()
    errors = io.StringIO()
    with open(log_file, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(errors):
        print(f"$ facecls {' '.join(args)}", flush=True)
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        finally:
            GlobalHydra.instance().clear()
            if outer_hydra is not None:
                GlobalHydra.instance().initialize(outer_hydra)
            HydraConfig.instance().cfg = outer_config
            sys.argv[:], root.handlers[:] = saved[0], saved[1]
            root.setLevel(saved[2])
            torch.set_rng_state(saved[3])
        log.write(errors.getvalue())
    return Finished(code, errors.getvalue())


def last_error(proc: Finished) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("facecls: error:")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1].replace("facecls: error: ", "")


def run_once(args: list[str], target: Path, log_file: Path) -> Outcome:
    """Run ``args`` (which write into ``target``) unless ``target`` already holds the result of
    exactly these arguments; an unfinished or different earlier attempt is removed first."""
    marker = target / DONE
    if marker.is_file() and json.loads(marker.read_text()).get("args") == args:
        return Outcome(ok=True, reused=True)
    if target.exists():
        shutil.rmtree(target)
    proc = facecls(args, log_file)
    if proc.returncode != 0:
        return Outcome(ok=False, message=last_error(proc))
    target.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"args": args}))
    return Outcome(ok=True)
