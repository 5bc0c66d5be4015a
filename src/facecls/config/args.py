"""Command-line arguments rewritten before Hydra composes (torch-free).

`facecls train resume=RUN_DIR|CKPT|auto` continues an interrupted run in its own run dir: the run's own
overrides (from .hydra/overrides.yaml) come first, then whatever else the user typed (e.g.
a larger trainer.max_epochs), and hydra.run.dir points back at the run dir. The train task
then restores model, optimizer, scheduler, early-stopping counter, history and every random
state from checkpoints/last.pt (facecls.training.resume). Under torchrun, ranks other than 0
write no run dir (worker_rank_args).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from facecls.errors import exit_with

# `key=value` with a plain key (`+key`, `++key`, `~key` included); the value as typed.
_OVERRIDE = re.compile(r"^(?P<key>[+~]{0,2}[\w./@-]+)=(?P<value>.*)$", re.DOTALL)


def hydra_quote(text: str) -> str:
    """``text`` as a quoted Hydra value, whatever it holds (spaces, non-ASCII, quotes): inside
    quotes Hydra unescapes only backslashes that precede a quote, and the quote itself."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def _parses(token: str) -> bool:
    try:
        OverridesParser.create().parse_override(token)
        return True
    except HydraException:  # OverrideParseException, or the lexer's own
        return False


def quote_plain_values(args: list[str]) -> list[str]:
    """A path the shell passed as one argument (``data.root=/my photos/Zoë``) is quoted for
    Hydra, whose unquoted values allow no spaces and no non-ASCII letters. Only values that
    do not parse as they are and hold no Hydra syntax (quotes, brackets, commas, ``${``) are
    touched: a list, a sweep or a quoted value is the user's own and stays as typed."""
    out = []
    for arg in args:
        match = _OVERRIDE.match(arg) if not arg.startswith("-") else None
        value = match["value"] if match else ""
        if match and value and not re.search(r"['\"\[\]{}(),]|\$\{", value) and not _parses(arg):
            arg = f"{match['key']}={hydra_quote(value)}"
        out.append(arg)
    return out


def unquote(value: str) -> str:
    """A value as Hydra reads it (``'my runs/run 1'`` → ``my runs/run 1``); as typed if it does not parse."""
    try:
        parsed = OverridesParser.create().parse_override(f"v={value}").value()
    except HydraException:  # OverrideParseException, or the lexer's own
        return value
    return parsed if isinstance(parsed, str) else value


def _value(args: list[str], key: str) -> str | None:
    found = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return found[-1] if found else None


def _saved_overrides(run_dir: Path) -> list[str]:
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
        value = unquote(value)
        path = Path(value).expanduser()
        run_dir = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not (run_dir / ".hydra" / "overrides.yaml").is_file():
            exit_with(f"'{value}' is not a facecls run dir (no .hydra/overrides.yaml) — pass resume=<run dir> "
                      "or resume=<run dir>/checkpoints/last.pt.")
    run_dir = run_dir.resolve()
    print(f"facecls: resuming {run_dir}")
    # quoted: a run dir with spaces or non-ASCII letters must come back to Hydra as one value
    where = hydra_quote(str(run_dir))
    return _saved_overrides(run_dir) + others + [f"resume={where}", f"hydra.run.dir={where}"]


def worker_rank_args(args: list[str]) -> list[str]:
    """Hydra overrides for a torchrun process other than rank 0: no .hydra/ and no log file
    (rank 0 writes the one run dir). Without an explicit ``hydra.run.dir`` it runs in ``.``:
    the default pattern's time and random id would name a different dir in every process."""
    owned = ("hydra.output_subdir=", "hydra/job_logging=")
    extra = ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        extra.append("hydra.run.dir=.")
    return [a for a in args if not a.startswith(owned)] + extra
