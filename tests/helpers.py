"""Plain helpers the tests share (fixtures live in conftest.py): the CLI environment and
runner, run-dir readers, and tiny trained checkpoints for the tests that read a run.

Tests import them with ``from helpers import ...`` (pytest puts tests/ on sys.path: it
has no __init__.py, and the default import mode prepends each test file's folder)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Small, fast settings every CLI test starts from (tiny images, few epochs, no bars).
TINY = ["model.input_size=16", "trainer.max_epochs=2", "trainer.batch_size=16", "trainer.progress=false"]

# One epoch at 16×16 px: enough for a real checkpoint, fast on two CPU cores (train_runs).
FAST = ["model.input_size=16", "trainer.max_epochs=1", "trainer.batch_size=16", "trainer.progress=false"]
MODELS = {
    "convnet": ["model=convnet"],
    "mlp": ["model=mlp", "model.hidden=[12]"],  # 12 hidden neurons → 12 weight images
}


def cli_env(cache_dir: str | os.PathLike) -> dict:
    """Environment for CLI subprocesses: a private cache dir, no GPU, Hydra's short errors."""
    env = dict(os.environ, FACECLS_CACHE_DIR=str(cache_dir), CUDA_VISIBLE_DEVICES="")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(*args: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run `facecls ARGS` in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "facecls", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, errors="backslashreplace", timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"facecls {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def start_cli(*args: str, cwd: Path, env: dict) -> subprocess.Popen:
    """`facecls ARGS` started in the background, so that independent commands of one test run
    side by side (two cores; most of a short command is starting Python). finish_cli waits."""
    return subprocess.Popen([sys.executable, "-m", "facecls", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="backslashreplace")


def finish_cli(job: subprocess.Popen, check: bool = True) -> subprocess.CompletedProcess:
    """What run_cli would have returned (or raised) for a start_cli job, once it has ended."""
    stdout, stderr = job.communicate(timeout=600)
    proc = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"facecls {' '.join(job.args[3:])} failed ({proc.returncode}):\n"
                             f"{stdout[-3000:]}\n{stderr[-3000:]}")
    return proc


def only_run_dir(base: Path) -> Path:
    """The single run dir (the folder holding metrics.json) under ``base``."""
    found = [p.parent for p in Path(base).rglob("metrics.json")]
    assert len(found) == 1, f"expected one run dir under {base}, found {found}"
    return found[0]


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as strings keyed by column."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_history(run_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``run_dir/history.csv`` (what fit reported each epoch)."""
    return read_csv(Path(run_dir) / "history.csv")


def compose_tiny_train(data_root: Path, cache_dir: Path, *overrides: str):
    """The `train` config for an ImageFolder at ``data_root`` with the TINY settings and its
    own cache dir, composed in-process like `facecls train` would (conftest's cfg_train)."""
    from facecls.config.compose import compose

    return compose("train", ["data=imagefolder", f"data.root={data_root}", *TINY,
                             f"paths.cache_dir={cache_dir}", *overrides])


# (data root, model name) → its train_runs run dir, trained once per session and never written into
_trained: dict[tuple[str, str], Path] = {}


def train_runs(base: Path, data_root: Path, names: list[str]) -> tuple[dict[str, Path], dict]:
    """Tiny trained checkpoints for the tests that read a run (visualize, robustness, tta, faults):
    short `facecls train` runs of each named model (MODELS), started side by side, each once per
    session and data root (base/trained/<name>); every caller gets its own copy in base/<name>,
    to write into freely (commands find a run from its checkpoint's path).
    Returns ({name: best.pt}, the CLI env, its cache in base/cache)."""
    env = cli_env(base / "cache")
    jobs = {name: subprocess.Popen([sys.executable, "-m", "facecls", "train", "data=imagefolder",
                                    f"data.root={data_root}", *MODELS[name], *FAST,
                                    f"hydra.run.dir={base / 'trained' / name}"],
                                   cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name in names if (str(data_root), name) not in _trained}
    for name, job in jobs.items():
        output, _ = job.communicate(timeout=300)
        assert job.returncode == 0, f"training {name} failed:\n{output[-3000:]}"
        _trained[str(data_root), name] = base / "trained" / name
    for name in names:
        shutil.copytree(_trained[str(data_root), name], base / name)
    return {name: base / name / "checkpoints" / "best.pt" for name in names}, env


def write_face_tree(root: Path, people: dict[str, int], size: int = 24, seed: int = 0) -> Path:
    """An LFW-layout tree ``root/<name>/<name>_NNNN.png`` (numbered from 0001) of hand-made
    images: each person one random picture of their own, repeated as every photo of theirs, so
    two photos of one person embed identically and photos of different people do not."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, count in people.items():
        picture = Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(1, count + 1):
            picture.save(root / name / f"{name}_{number:04d}.png")
    return root


def train_tiny_checkpoint(base: Path, data_root: Path, *overrides: str) -> Path:
    """A one-epoch classifier trained in-process on ``data_root`` (TINY settings); its best.pt."""
    from facecls.training.run import build_run

    run_dir = base / "run"
    run = build_run(compose_tiny_train(data_root, base / "cache", "trainer.max_epochs=1", *overrides), run_dir)
    run.fit(run_dir)
    return run_dir / "checkpoints" / "best.pt"
