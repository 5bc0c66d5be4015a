"""Start-up costs a run does not need (issue 22): Hydra's second composition, torch._inductor."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from hydra._internal.hydra import Hydra

from facecls.cli import MODE_GROUPS, compose_once
from facecls.config.compose import config_dir


def sets_hydra_mode(path: Path) -> bool:
    node = yaml.safe_load(path.read_text()) or {}
    return isinstance(node, dict) and isinstance(node.get("hydra"), dict) and "mode" in node["hydra"]


def test_only_the_mode_groups_set_hydra_mode():
    """compose_once skips Hydra's mode composition unless an argument names one of MODE_GROUPS: true
    only while no other config file sets hydra.mode."""
    conf = Path(config_dir())
    setters = {p.relative_to(conf).parts[0] for p in conf.rglob("*.yaml") if sets_hydra_mode(p)}
    assert setters, "the experiments set hydra.mode: MULTIRUN — the scan found none"
    assert setters <= set(MODE_GROUPS), setters - set(MODE_GROUPS)


def test_compose_once_keeps_hydras_mode_where_an_argument_may_set_it():
    original = getattr(Hydra, "_facecls_get_mode", Hydra.get_mode)
    try:
        compose_once(["trainer.max_epochs=1", "-m", "model=mlp", "hydra.run.dir=x", "hydra.sweep.dir=y"])
        assert Hydra.get_mode(None, "train", []) is None  # no composition: run, or -m's multirun
        for args in (["experiment=s1_4_dropout"], ["+experiment=faces/open_set"], ["hparams_search=optuna"],
                     ["hydra.mode=MULTIRUN"], ["--config-dir", "elsewhere"], ["hydra/launcher=joblib"]):
            compose_once(args)
            assert Hydra.get_mode is original, args
    finally:
        Hydra.get_mode = original


def test_an_experiment_still_sweeps_from_the_command_line(tmp_path, tiny_faces, cache_env):
    """conf/experiment/s1_4_dropout.yaml sets hydra.mode=MULTIRUN: no -m needed (Hydra's mode read)."""
    proc = subprocess.run(
        [sys.executable, "-m", "facecls", "train", "experiment=s1_4_dropout", "data=imagefolder",
         f"data.root={tiny_faces}", "trainer.max_epochs=1", "trainer.limit_batches=1", "model.input_size=16",
         "trainer.checkpoints=false", "trainer.progress=false", "reg.dropout.p=0.1,0.2",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=cache_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1"]


def test_a_plain_run_imports_no_inductor():
    """torch.use_deterministic_algorithms imports torch._inductor: seed_everything calls it only on a change."""
    code = ("import sys\nfrom facecls.training.runtime import seed_everything\nseed_everything(1)\n"
            "print('torch._inductor' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False"]


def test_a_sweeps_jobs_are_composed_once(monkeypatch):
    """Hydra's sweeper composes every job to validate it, then its launcher composes each again:
    facecls.sweeps.validated hands the launcher the validated config, with the master's resolver
    cache (the sweep dir's ${now:…}) copied in again."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.utils import setup_globals
    from hydra.plugins.sweeper import Sweeper
    from hydra.types import RunMode

    from facecls.config.compose import register_resolvers
    from facecls.sweeps.validated import _composed, reuse_validated_configs

    setup_globals()
    register_resolvers()
    reuse_validated_configs()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(config_dir()))
    master = loader.load_configuration("train", overrides=["hydra.sweep.dir=sweeps/${now:%H-%M-%S-%f}"],
                                       run_mode=RunMode.MULTIRUN)
    compositions = []
    real = ConfigLoaderImpl.load_configuration
    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration",
                        lambda self, *a, **k: compositions.append(k.get("overrides")) or real(self, *a, **k))
    sweeper = type("Sweeper", (), {"config": master, "config_loader": loader, "hydra_context": None})()
    batch = [["seed=1", "model=mlp"], ["seed=2", "model=convnet"], ["seed=2", "model=convnet"]]
    Sweeper.validate_batch_is_legal(sweeper, batch)
    assert len(compositions) == 3  # the validation composed each job
    sweep_dir = master.hydra.sweep.dir  # the launcher resolves it after the validation
    jobs = [loader.load_sweep_config(master, list(overrides)) for overrides in batch]
    assert len(compositions) == 3  # …and the launcher composed none again
    assert [(j.seed, j.model._target_.rsplit(".", 1)[-1]) for j in jobs] == [(1, "MLP"), (2, "ConvNet"), (2, "ConvNet")]
    assert jobs[1] is not jobs[2]  # identical overrides: one config each, as Hydra gives
    assert all(j.hydra.sweep.dir == sweep_dir for j in jobs)  # the same ${now:…} as the master
    assert not _composed  # each validated config was handed over once: nothing kept
    loader.load_sweep_config(master, ["seed=3"])  # never validated: composed as before
    assert len(compositions) == 4
