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
    for section in SECTIONS:
        assert f"## {section.title}" in text
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
    assert proc.stdout.count("re-used") == sum(1 for s in SECTIONS if s.experiment)
