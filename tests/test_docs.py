"""The documentation and the code cannot disagree: the site builds with `mkdocs build --strict`
(no broken link, no page missing from the nav, every conf/*.yaml documented by its first-line
comment) and every `facecls …` command shown in docs/ and README.md composes — run in-process
with `--cfg job`, which checks the command, every group choice, key and value type without
running anything (a sweep is checked with the first value of each swept override). A command
shown with its `facecls: error: …` line must fail with that line, or fail only when it runs."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"`(facecls [^`]+)`")
PLACEHOLDER = re.compile(r"<[^<>]*>")  # <run dir>, <sweep dir>, <overrides>
HOLE = "\x00"
COMMAND = re.compile(r"facecls (-\S*|[a-z][a-z-]*)(\s|$)")  # not `facecls: error`, `facecls serve:`


@dataclass(frozen=True)
class Shown:
    command: str                # `facecls …` as the page shows it
    error: str | None = None    # the `facecls: error: …` line shown right below it, if any


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)]


def shown_commands(text: str) -> list[Shown]:
    """Every `facecls <command> …` of a markdown text: lines of code blocks (a `$ ` prompt, a
    trailing `\\` continuation and `torchrun … -m facecls` allowed) and inline code spans."""
    found: list[Shown] = []
    in_block, pending = False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            found += [Shown(m.group(1)) for m in INLINE.finditer(line) if COMMAND.match(m.group(1))]
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if line.startswith("facecls: error:") and found and found[-1].error is None:
            found[-1] = Shown(found[-1].command, line)
            continue
        line = line.removeprefix("$ ")
        start = 0 if line.startswith("facecls ") else line.find(" -m facecls ") + len(" -m ")
        if (line.startswith("facecls ") or " -m facecls " in line) and COMMAND.match(line[start:]):
            found.append(Shown(line[start:]))
    return found


def as_args(command: str) -> list[str]:
    """The argv after `facecls`: shell words, comments dropped. A placeholder that is a whole word
    (`<overrides>`) or a whole value (`experiment=<name>`: any choice) and an ellipsis word are left
    out; one inside a value (`ckpt=<run dir>/checkpoints/best.pt`) and `resume=<run dir>` become `X`."""
    words = shlex.split(PLACEHOLDER.sub(HOLE, command), comments=True)[1:]
    whole_value = re.compile(rf"^(?!resume=)[^=]+={HOLE}$")
    return [w.replace(HOLE, "X") for w in words if w not in (HOLE, "…", "...") and not whole_value.match(w)]


def compose_args(args: list[str], cwd: Path) -> list[str]:
    """What to run to check a shown command without running it: `--cfg job` (a sweep's swept
    overrides reduced to their first value, since one job's config is composed) unless it already
    asks for `--help`, `--cfg` or `--info`. A `resume=DIR` gets a stand-in run dir under cwd."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not args or args[0] in ("-h", "--help") or any(a in ("--help", "-h", "--cfg", "-c", "--info") for a in args):
        return args
    parser, out = OverridesParser.create(), []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        if arg.startswith("resume=") and arg not in ("resume=auto", "resume=null"):
            if not stand_in_run_dir(arg.split("=", 1)[1], cwd):
                continue
        elif "=" in arg and not arg.startswith("-"):
            with contextlib.suppress(HydraException):  # `~`, odd characters: the CLI's own check decides
                override = parser.parse_override(arg)
                if override.is_sweep_override():
                    arg = f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"
        out.append(arg)
    return [*out, "--cfg", "job"]


def stand_in_run_dir(value: str, cwd: Path) -> bool:
    """Make `value` (relative) look like a run dir, as `resume=` requires; False for other paths."""
    path = Path(value)
    if path.is_absolute() or value.startswith("~"):
        return False
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path
    (cwd / run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (cwd / run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    return True


def run_in_process(args: list[str]) -> tuple[int, str]:
    """facecls.cli.main(args) here: (exit status, stdout + stderr)."""
    from facecls.cli import main

    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(list(args))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return code, out.getvalue()


def check_commands(paths: list[Path], cwd: Path) -> tuple[int, list[str]]:
    """(how many distinct commands were checked, one line per command that does not compose)."""
    checked, failures = set(), []
    for path in paths:
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        for shown in shown_commands(path.read_text(encoding="utf-8")):
            args = compose_args(as_args(shown.command), cwd)
            if (tuple(args), shown.error) in checked:
                continue
            checked.add((tuple(args), shown.error))
            code, output = run_in_process(args)
            lines = output.strip().splitlines()
            if shown.error and code != 0 and shown.error not in lines:
                failures.append(f"{where}: {shown.command}\n    shows: {shown.error}\n    "
                                f"prints: {(lines or ['(nothing)'])[-1]}")
            elif code != 0 and not shown.error:
                failures.append(f"{where}: {shown.command}\n    → {(lines or ['(nothing)'])[-1]}")
    return len(checked), failures


@pytest.fixture
def cli_sandbox(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --cfg job writes nothing, but a failure must not litter the repo
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", sys.argv[:])  # the CLI sets sys.argv for Hydra
    return tmp_path


def test_shown_commands_are_found(tmp_path):
    """The extractor sees prompts, continuations, torchrun, inline spans and shown errors."""
    text = "\n".join([
        "Run `facecls train model=mlp` first, not `facecls: error:`.", "```console", "$ facecls eval ckpt=X",
        "facecls serve: http://127.0.0.1:8000/ (page)",
        "$ facecls train model=x", "facecls: error: unknown model 'x' — choose one of: a, b.",
        "torchrun --nproc_per_node=2 -m facecls train \\", "  trainer.strategy=ddp", "```",
        "```bash", "facecls train -m reg=none,dropout seed=0,1  # a sweep", "```"])
    assert shown_commands(text) == [
        Shown("facecls train model=mlp"), Shown("facecls eval ckpt=X"),
        Shown("facecls train model=x", "facecls: error: unknown model 'x' — choose one of: a, b."),
        Shown("facecls train trainer.strategy=ddp"), Shown("facecls train -m reg=none,dropout seed=0,1  # a sweep")]
    assert compose_args(as_args("facecls train -m reg=none,dropout seed=0,1  # a sweep"), tmp_path) == \
        ["train", "reg=none", "seed=0", "--cfg", "job"]
    assert compose_args(as_args("facecls train <overrides> resume=<run dir> experiment=<name> hydra.x=…"),
                        tmp_path) == ["train", "resume=X", "hydra.x=…", "--cfg", "job"]
    assert (tmp_path / "X" / ".hydra" / "overrides.yaml").is_file()


def test_a_wrong_command_in_the_docs_would_fail(cli_sandbox, tmp_path):
    """The check can fail: a wrong option, a wrong key and a stale error line are caught."""
    page = tmp_path / "page.md"
    page.write_text("```bash\nfacecls train model=resnet\nfacecls train trainer.max_epoch=3\n"
                    "facecls train -m reg=none,dropout\n"
                    "$ facecls train model=resnet2\nfacecls: error: an old message\n```\n")
    count, failures = check_commands([page], tmp_path)
    assert count == 4 and len(failures) == 3, failures
    assert "model=resnet" in failures[0] and "max_epoch" in failures[1] and "an old message" in failures[2]


def test_front_door_commands_compose(cli_sandbox):
    """The default-suite part of the check: every command the README, the site's home and the
    getting-started pages show (what a new user types first)."""
    pages = [ROOT / "README.md", DOCS / "index.md", *sorted((DOCS / "getting-started").glob("*.md"))]
    count, failures = check_commands(pages, cli_sandbox)
    assert count >= 20, f"only {count} commands found: is the extractor broken?"
    assert not failures, "commands that do not compose:\n" + "\n".join(failures)


@pytest.mark.slow
def test_every_command_shown_in_the_docs_composes(cli_sandbox):
    """Every page: about 200 distinct commands, 30 s on 2 quiet cores (2 min on busy ones)."""
    count, failures = check_commands(markdown_files(), cli_sandbox)
    assert count > 50, f"only {count} commands found: is the extractor broken?"
    assert not failures, "commands in the docs that do not compose:\n" + "\n".join(failures)


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_covers_every_config_and_key():
    reference = load_hook("config_reference").render()
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        rel = path.relative_to(ROOT / "conf")
        as_choice = f"`{rel.parts[0]}={rel.relative_to(rel.parts[0]).with_suffix('').as_posix()}`" \
            if len(rel.parts) > 1 else "(a primary config)"
        assert f"`conf/{rel.as_posix()}`" in reference or as_choice in reference, rel
    assert "| `model.channels` | `[16, 32]` | one conv layer per entry" in reference
    assert "| `trainer.max_epochs` | `30` |" in reference


def test_a_config_without_a_first_line_comment_fails_the_build(tmp_path):
    hook = load_hook("config_reference")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "good.yaml").write_text("# A documented model.\n_target_: a.B\nwidth: 3  # how wide\n")
    (tmp_path / "train.yaml").write_text("# facecls train\ndefaults:\n  - model: good\n")
    assert "| `model.width` | `3` | how wide |" in hook.render(tmp_path)
    (tmp_path / "model" / "bad.yaml").write_text("_target_: a.C\n")
    with pytest.raises(hook.ConfigDocError, match="conf/model/bad.yaml has no first-line comment"):
        hook.render(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="the docs extra is not installed: pip install -e '.[docs]'")
def test_the_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a warning (broken link or anchor, a page outside the nav, a hook's
    error) fails it. The site has a page for every command and the generated reference."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    from facecls.cli import COMMANDS

    missing = [name for name in COMMANDS if not (site / "commands" / name / "index.html").is_file()]
    assert not missing, f"commands without a page in docs/commands/: {missing}"
    reference = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "trainer=default" in reference and "model.channels" in reference
    performance = (site / "performance" / "index.html").read_text(encoding="utf-8")
    assert "fp32 matmul peak" in performance


def test_every_command_has_a_page_in_the_nav():
    """A new command in cli.COMMANDS needs its page (docs/commands/<name>.md) and a nav entry."""
    from facecls.cli import COMMANDS

    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [name for name in COMMANDS
               if not (DOCS / "commands" / f"{name}.md").is_file() or f"commands/{name}.md" not in nav]
    assert not missing, f"commands without a page in docs/commands/ and mkdocs.yml's nav: {missing}"


def test_readme_fits_on_two_screens():
    """The README is the front door (what, install, first run, everyday commands, links); the rest
    lives in docs/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines — move detail into docs/ (≤ 150)"


def test_performance_page_is_built_from_the_benchmark_json(tmp_path, monkeypatch):
    """Each docs/performance/*.json is a dated section with the benchmark's own table; a result
    without its date cannot be placed and fails the build."""
    hook = load_hook("performance")
    page = hook.render()
    newest = max(json.loads(p.read_text())["date"] for p in (DOCS / "performance").glob("*.json"))
    assert f"## {newest[:10]} — " in page and "What the benchmark printed" in page and "| target |" in page
    undated = tmp_path / "bench.json"
    report = json.loads(next((DOCS / "performance").glob("*.json")).read_text())
    report.pop("date")
    undated.write_text(json.dumps(report))
    monkeypatch.setattr(hook, "RESULTS", tmp_path)
    with pytest.raises(hook.PluginError, match="has no 'date'"):
        hook.render()
