"""Continue an interrupted run in its own run dir, exactly where it stopped.

`facecls train resume=RUN_DIR|CKPT|auto` is rewritten before Hydra composes: the run's own
overrides (from .hydra/overrides.yaml) come first, then whatever else the user typed (e.g.
a larger trainer.max_epochs), and hydra.run.dir points back at the run dir. The train task
then restores model, optimizer, scheduler, early-stopping counter, history and every random
state from checkpoints/last.pt.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from facecls.errors import UserError, exit_with

log = logging.getLogger(__name__)


def _value(args: list[str], key: str) -> str | None:
    found = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return found[-1] if found else None


def _saved_overrides(run_dir: Path) -> list[str]:
    import yaml

    saved = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    return [o for o in saved if not o.startswith(("resume=", "hydra.run.dir="))]


def _unfinished(run_dir: Path) -> bool:
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        return False
    try:
        return json.loads((run_dir / "metrics.json").read_text()).get("stop_reason") == "interrupted"
    except (OSError, ValueError):
        return True  # killed before metrics.json was written


def find_unfinished_run(output_dir: Path, overrides: list[str]) -> Path | None:
    """The newest run under ``output_dir`` with the same overrides that did not finish."""
    wanted = sorted(overrides)
    candidates = []
    for saved in output_dir.rglob(".hydra/overrides.yaml"):
        run_dir = saved.parent.parent
        if _unfinished(run_dir) and sorted(_saved_overrides(run_dir)) == wanted:
            candidates.append(((run_dir / "checkpoints" / "last.pt").stat().st_mtime, run_dir))
    return max(candidates)[1] if candidates else None


def expand_resume_args(args: list[str]) -> list[str]:
    """Rewrite `resume=…` into the resumed run's overrides + hydra.run.dir (see module doc)."""
    value = _value(args, "resume")
    if value in (None, "null", "None"):
        return args
    if "-m" in args or "--multirun" in args:
        exit_with("resume= continues one run; resume each job of a sweep on its own: "
                  "facecls train resume=<sweep dir>/<job number>.")
    others = [a for a in args if not a.startswith("resume=")]
    if value == "auto":
        plain = [a for a in others if "=" in a and not a.startswith(("hydra.", "-"))]
        output_dir = Path(_value(args, "paths.output_dir") or "outputs")
        run_dir = find_unfinished_run(output_dir, plain) if output_dir.is_dir() else None
        if run_dir is None:
            print(f"facecls: no unfinished run with these overrides under {output_dir}/; starting a new run.")
            return others
    else:
        path = Path(value).expanduser()
        run_dir = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not (run_dir / ".hydra" / "overrides.yaml").is_file():
            exit_with(f"'{value}' is not a facecls run dir (no .hydra/overrides.yaml) — pass resume=<run dir> "
                      "or resume=<run dir>/checkpoints/last.pt.")
    run_dir = run_dir.resolve()
    print(f"facecls: resuming {run_dir}")
    return _saved_overrides(run_dir) + others + [f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


def load_resume_point(run_dir: Path) -> dict | None:
    """checkpoints/last.pt of ``run_dir`` as a resume point, or None to start from scratch."""
    from facecls.checkpoint import load_checkpoint

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        log.info("No checkpoints/last.pt in %s yet: starting from epoch 1.", run_dir)
        return None
    ckpt = load_checkpoint(last)
    if not ckpt.get("rng") or ckpt.get("optimizer") is None:
        raise UserError(f"{last} has no resume state — it was not written by facecls train; start a new run.")
    log.info("Resuming from %s (epoch %d finished).", last, ckpt["epoch"])
    return ckpt


def restore_training_state(ckpt: dict, model, optimizer, scheduler, stopper) -> None:
    from facecls.checkpoint import restore_model

    restore_model(model, ckpt["model"], source="checkpoints/last.pt")
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    stopper.load_state_dict(ckpt["early_stopping"])
