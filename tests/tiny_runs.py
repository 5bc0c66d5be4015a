"""Tiny trained checkpoints for the tests that read a run (visualize, robustness):
short `facecls train` runs on the tiny_faces fixture, started side by side."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# One epoch at 16×16 px: enough for a real checkpoint, fast on two CPU cores.
FAST = ["model.input_size=16", "trainer.max_epochs=1", "trainer.batch_size=16", "trainer.progress=false"]
MODELS = {
    "convnet": ["model=convnet"],
    "mlp": ["model=mlp", "model.hidden=[12]"],  # 12 hidden neurons → 12 weight images
}


def train_runs(base: Path, data_root: Path, names: list[str]) -> tuple[dict[str, Path], dict]:
    """Train each named model into base/<name>; return ({name: best.pt}, the CLI env)."""
    env = dict(os.environ, FACECLS_CACHE_DIR=str(base / "cache"), CUDA_VISIBLE_DEVICES="")
    env.pop("HYDRA_FULL_ERROR", None)
    jobs = {name: subprocess.Popen([sys.executable, "-m", "facecls", "train", "data=imagefolder",
                                    f"data.root={data_root}", *MODELS[name], *FAST,
                                    f"hydra.run.dir={base / name}"],
                                   cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name in names}
    for name, job in jobs.items():
        output, _ = job.communicate(timeout=300)
        assert job.returncode == 0, f"training {name} failed:\n{output[-3000:]}"
    return {name: base / name / "checkpoints" / "best.pt" for name in names}, env
