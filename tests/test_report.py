"""`facecls report` end to end on tiny data: every section heading, every referenced file valid."""
from __future__ import annotations

import re

import pytest
from PIL import Image

from facecls.report.sections import SECTIONS

from helpers import run_cli


@pytest.mark.slow  # runs `facecls report` twice (every section's training): ~35 s on 2 cores
def test_report_has_every_section_and_valid_figures(tmp_path, tiny_faces, cache_env):
    out = tmp_path / "report"
    args = ["report", "data=imagefolder", f"data.root={tiny_faces}", f"out={out}", "report.budget=smoke",
            "report.allow_random_init=true"]
    run_cli(*args, cwd=tmp_path, env=cache_env)
    text = (out / "report.md").read_text()
    for section in SECTIONS:  # the extras only with report.extra_regularisers=true
        assert (f"## {section.title}" in text) != section.extra, section.title
    for number in ["1", "2", "3", "4", "5", "6", "7", "8, 9", "10", "11–15"]:
        assert f"**Figure {number}.**" in text, number
    assert "random initialisation" in text and "Skipped" not in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) >= 20
    for relative in images:
        with Image.open(out / relative) as image:
            image.verify()
    assert "| k3 |" in text or "| 0 | k3 |" in text  # the architecture sweep's table
    assert re.search(r"\| conv2 \| Conv2d \| 3 \| 1 \| 0 \| \d+×\d+ \| 1 \| 7 \|", text)  # report 1.1: 5×5, 3×3 → 7

    # Run again: every finished section is re-used, nothing is trained twice.
    proc = run_cli(*args, cwd=tmp_path, env=cache_env)
    assert proc.stdout.count("re-used") == sum(1 for s in SECTIONS if s.experiment and not s.extra)


@pytest.mark.slow  # two sweeps of the smoke budget: ~25 s on 2 cores
def test_extra_regularisers_add_rows_and_a_section(tmp_path, cache_env):
    out = tmp_path / "report"
    run_cli("report", "report.sections=[s1_4_lr_schedule,s1_4_modern]", "report.extra_regularisers=true",
            "report.budget=smoke", f"out={out}", cwd=tmp_path, env=cache_env)
    text = (out / "report.md").read_text()
    schedules = text.split("## 1.4 Learning-rate schedules")[1].split("## ")[0]
    assert "'sched=none,step,cosine,plateau,onecycle'" in schedules  # the Re-run line names the extra rows
    rows = re.findall(r"^\| \d+ \| (\w+) \| [\d.]+ \|", schedules, flags=re.M)
    assert rows == ["none", "step", "cosine", "plateau", "onecycle"]
    modern = text.split("## 1.4 Modern regularisers")[1]
    assert re.findall(r"^\| \d+ \| (\w+) \| [\d.]+ \|", modern, flags=re.M) == ["none", "ema", "mixup"]
    config = (out / "runs" / "s1_4_modern" / "1" / ".hydra" / "config.yaml").read_text()
    assert "decay: 0.99" in config  # reg=ema switched the weight average on
