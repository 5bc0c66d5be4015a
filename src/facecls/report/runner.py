"""Run facecls commands for the report, re-using results that are already complete."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DONE = ".report-done.json"  # written after a command succeeded, with the exact arguments


@dataclass
class Outcome:
    ok: bool
    reused: bool = False
    message: str = ""  # the one-line reason when not ok


def facecls(args: list[str], log_file: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `facecls ARGS` as a user would; everything it prints goes to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as log:
        log.write(f"$ facecls {' '.join(args)}\n")
        log.flush()
        proc = subprocess.run([sys.executable, "-m", "facecls", *args], stdout=log, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **(env or {})})
        log.write(proc.stderr)
    return proc


def last_error(proc: subprocess.CompletedProcess) -> str:
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
