"""MkDocs hook: the Performance page's results, built from the benchmark's own JSON output.

Every docs/performance/*.json (written by `python scripts/bench.py --out FILE`) becomes a dated
section, newest first: the machine (CPU, its bf16 capability, torch, threads, load), the targets
with their verdicts, and the benchmark's printed table (scripts/bench_report.py renders both, so the
page shows exactly what the run printed). Nothing on the page is a number typed by hand.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

from mkdocs.exceptions import PluginError

MARKER = "<!-- facecls:bench-results -->"
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "performance"


def bench_report():
    """scripts/bench_report.py (torch-free), loaded by path: scripts/ is not a package."""
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "scripts" / "bench_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result_date(path: Path, report: dict) -> str:
    """The run's UTC date, which bench.py records; a file without one cannot be placed on the page."""
    date = report.get("date")
    if not date:
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        raise PluginError(f"{where} has no 'date' — write it with python scripts/bench.py --out FILE "
                          "(bench.py records the date)")
    return date


def describe(report: dict) -> list[str]:
    """Machine and settings as a small table."""
    mc, st = report["machine"], report["settings"]
    cpu = mc.get("cpu") or {}
    precision = "bf16 (native)" if cpu.get("facecls_amp_auto_on_cpu") else "fp32"
    rows = [
        ("CPU", f"{cpu.get('model_name', '?')} (family {cpu.get('family', '?')}, model {cpu.get('model', '?')}); "
                f"flags {' '.join(cpu.get('flags', [])) or '-'}"),
        ("cores / torch threads", f"{mc['cpu_cores']} / {mc['torch_threads']}"),
        ("device", f"{mc['device']}; `trainer.amp=auto` on this CPU trains in {precision}"),
        ("torch / torchvision / python", f"{mc['torch']} / {mc['torchvision']} / {mc['python']}"),
        ("fp32 matmul peak", f"{mc['matmul_peak_flops'] / 1e9:.1f} GFLOP/s"),
        ("1-min load average", " → ".join(f"{x:.1f}" for x in mc["load_average_1min"])),
        ("data", f"{st['images']} JPEGs of {st['source_size']} px, {st['classes']} classes, batch "
                 f"{st['batch_size']}, {st['epochs']} epochs"),
        ("benchmark time", f"{sum(report.get('bench_seconds', {}).values()):.0f} s"),
    ]
    return ["| machine and settings | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def render_one(path: Path, printer) -> list[str]:
    report = json.loads(path.read_text(encoding="utf-8"))
    date = result_date(path, report)
    cpu = (report["machine"].get("cpu") or {}).get("model_name", "?")
    flags = "".join(f" --{k.replace('_', '-')}" for k in ("quick", "e2e", "e2e_only") if report["settings"].get(k))
    flags += "".join(f" --e2e-override {o}" for o in report["settings"].get("e2e_override") or [])
    out = [f"## {date[:10]} — {cpu}, torch {report['machine']['torch']}", "",
           f"Measured {date.replace('T', ' ')} with `python scripts/bench.py{flags}`; the JSON: "
           f"[{path.name}](performance/{path.name}).", ""]
    if report["settings"].get("quick"):
        out += ['!!! warning "Smoke settings"',
                "    `--quick` runs tiny sizes to check that every measurement runs: its numbers say little "
                "about speed. Run the full benchmark on your machine for figures to compare.", ""]
    out += describe(report)
    out += ["| target | measured | goal | |", "|---|---|---|---|"]
    for t in report.get("targets", []):
        out.append(f"| {t['name']} | {t['value']:.3g} | {t['target']} | {'met' if t['met'] else '**missed**'} |")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        printer(report)
    out += ["", "What the benchmark printed:", "", "```text", buffer.getvalue().rstrip(), "```", ""]
    return out


def render() -> str:
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        raise PluginError("docs/performance/ holds no benchmark result — python scripts/bench.py --out "
                          "docs/performance/bench-<date>.json")
    printer = bench_report().print_report
    dated = sorted(((result_date(p, json.loads(p.read_text(encoding="utf-8"))), p) for p in files), reverse=True)
    out = []
    for _, path in dated:
        out += render_one(path, printer)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
