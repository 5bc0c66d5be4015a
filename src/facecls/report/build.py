"""Run every experiment of the course report and write DIR/report.md (`facecls report`).

Each section is run with the same commands a user would type (`facecls train experiment=…`,
`facecls visualize …`, `facecls robustness …`), so every number and figure in report.md can
be regenerated one section at a time. Finished sections are re-used when the report is run
again with the same arguments.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torchvision.models import AlexNet_Weights
from tqdm.auto import tqdm

from facecls.errors import UserError
from facecls.io import check_writable_dir
from facecls.models.pretrained import torchvision_cache_path
from facecls.report.markdown import write_report
from facecls.report.open_set import verify_runs
from facecls.report.runner import Outcome, run_once
from facecls.report.sections import SECTIONS

log = logging.getLogger(__name__)


def _section_overrides(cfg: DictConfig, section_id: str, experiment: str) -> list[str]:
    budget = cfg.budgets.get(cfg.report.budget)
    if budget is None:
        raise UserError(f"report.budget={cfg.report.budget} — use one of: {', '.join(cfg.budgets)}.")
    extra = cfg.extra_regularisers.get(experiment, []) if cfg.report.extra_regularisers else []
    return [*budget.get("all", []), *budget.get(experiment, []), *extra, *cfg.train_overrides]


def build_report(cfg: DictConfig, data: list[str]) -> Path:
    """Run the sections ``cfg.report.sections`` (default: all) with the user's ``data``
    overrides (data=…, data.*, paths.*) and write report.md; return its path."""
    out = Path(cfg.out).expanduser().resolve()
    wanted = list(cfg.report.sections) if cfg.report.sections else \
        [s.id for s in SECTIONS if cfg.report.extra_regularisers or not s.extra]
    unknown = sorted(set(wanted) - {s.id for s in SECTIONS})
    if unknown:
        raise UserError(f"unknown report section(s) {unknown} — choose from: {', '.join(s.id for s in SECTIONS)}.")
    sections = [s for s in SECTIONS if s.id in wanted]
    check_writable_dir(out, need_bytes=50 * 2**20, what="report", fix="pass out=DIR on a writable disk")  # before hours
    started = time.perf_counter()
    results: dict[str, dict] = {}
    bar = tqdm(sections, desc="report", unit="section", disable=None)
    for index, section in enumerate(bar):
        remaining = ", ".join(s.id for s in sections[index + 1:]) or "nothing"
        bar.set_description(f"report: {section.id}")
        log.info("[%d/%d] %s (then: %s)", index + 1, len(sections), section.title, remaining)
        t0 = time.perf_counter()
        result = {"section": section, "runs": None, "outcome": Outcome(ok=True), "notes": [], "figures": [],
                  "extra": list(cfg.extra_regularisers.get(section.experiment, []))
                  if cfg.report.extra_regularisers and section.experiment else []}
        results[section.id] = result
        logs = out / "logs" / f"{section.id}.log"
        if section.reuse:
            source = results.get(section.reuse)
            if source is None or source["runs"] is None:
                why = source["outcome"].message if source else "it was not selected (report.sections)"
                result["outcome"] = Outcome(ok=False, message=f"uses the run of section {section.reuse}: {why}")
                continue
            result["runs"], result["notes"] = source["runs"], list(source["notes"])
        elif section.experiment:
            runs_dir = out / "runs" / section.id
            key = "hydra.sweep.dir" if section.sweep else "hydra.run.dir"
            own = [a for a in data if not a.lstrip("+~").startswith("data")] if section.own_data else data
            args = ["train", f"experiment={section.experiment}", *own,
                    *_section_overrides(cfg, section.id, section.experiment), f"{key}={runs_dir}"]
            if section.alexnet and cfg.report.allow_random_init and not _weights_available(cfg.train_overrides):
                args.append("model.pretrained=false")
                result["notes"].append("random initialisation: no pretrained AlexNet weights were found "
                                       "(report.allow_random_init=true)")
            result["outcome"] = run_once(args, runs_dir, logs)
            result["runs"] = runs_dir if (runs_dir.exists() and any(runs_dir.rglob("metrics.json"))) else None
        for command in section.tools:
            target = out / section.id
            args = [a.format(out=target) for a in command]
            outcome = run_once(args, target / args[-1].split("/")[-1], logs)
            if not outcome.ok:
                result["notes"].append(f"`facecls {' '.join(args[:2])}` failed: {outcome.message}")
        if result["runs"] is not None:
            _draw_figures(section, result, out, logs)
            if section.open_set:
                verify_runs(section, result, out, logs, list(cfg.open_set_verify.get(cfg.report.budget, [])))
        outcome = result["outcome"]
        state = "re-used" if outcome.reused else "done" if outcome.ok else \
            "skipped" if section.alexnet and result["runs"] is None else "failed"
        log.info("    %s in %.0f s%s", state, time.perf_counter() - t0, "" if outcome.ok else f": {outcome.message}")
    bar.close()
    path = write_report(out, results, cfg, OmegaConf.to_container(cfg.report), time.perf_counter() - started, data)
    log.info("Report written to %s (%.1f min)", path, (time.perf_counter() - started) / 60)
    return path


def _weights_available(train_overrides) -> bool:
    """ImageNet AlexNet weights given by the user or in torchvision's cache (no download tried)."""
    given = any(str(o).startswith("model.weights_path=") for o in train_overrides)
    return given or torchvision_cache_path(AlexNet_Weights.IMAGENET1K_V1).is_file()


def _draw_figures(section, result: dict, out: Path, logs: Path) -> None:
    """Run each figure's command on the section's best checkpoint(s)."""
    run_dirs = sorted({p.parent for p in result["runs"].rglob("metrics.json")})
    for figure in section.figures:
        if figure.run_file:
            result["figures"].append((figure, [d / figure.file for d in run_dirs if (d / figure.file).is_file()], []))
            continue
        files, shown = [], []
        for run_dir in run_dirs:
            ckpt = run_dir / "checkpoints" / "best.pt"
            if not ckpt.is_file():
                continue
            target = out / section.id / (run_dir.name if len(run_dirs) > 1 else figure.command[0])
            args = [a.format(ckpt=ckpt, out=target) for a in figure.command]
            shown = [a.format(ckpt=os.path.relpath(ckpt), out=os.path.relpath(target)) for a in figure.command]
            outcome = run_once(args, target, logs)
            if outcome.ok:
                files += sorted(Path(p) for p in glob.glob(str(target / figure.file)))
            else:
                result["notes"].append(f"`facecls {' '.join(figure.command[:2])}` failed: {outcome.message}")
        result["figures"].append((figure, files, shown))
