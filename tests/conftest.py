"""Shared fixtures: tiny datasets written inside the tests, and a CLI runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Small, fast settings every CLI test starts from (tiny images, few epochs, no bars).
TINY = ["model.input_size=16", "trainer.max_epochs=2", "trainer.batch_size=16", "trainer.progress=false"]


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """A 3-class ImageFolder of synthetic faces, 12 images per class, 32×32 JPEGs."""
    from facecls.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("data") / "faces"
    write_dataset(root, num_classes=3, images_per_class=12, image_size=32, seed=0, progress=False)
    return root


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> dict:
    """Environment for CLI subprocesses: a private cache dir, no colour, no GPU."""
    env = dict(os.environ, FACECLS_CACHE_DIR=str(tmp_path / "cache"), CUDA_VISIBLE_DEVICES="")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(*args: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run `facecls ARGS` in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "facecls", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"facecls {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def only_run_dir(base: Path) -> Path:
    """The single run dir (the folder holding metrics.json) under ``base``."""
    found = [p.parent for p in base.rglob("metrics.json")]
    assert len(found) == 1, f"expected one run dir under {base}, found {found}"
    return found[0]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
