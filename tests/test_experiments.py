"""Every report experiment composes (each sweep value too) and runs one tiny epoch; the
debug modes do what they say; LFW gives its one-line instructions."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from facecls.config.compose import compose, config_dir, register_resolvers
from facecls.errors import UserError

from helpers import read_history

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
REPORT_SECTIONS = ["s1_2_baseline", "s1_3_pooling", "s1_4_dropout", "s1_4_weight_decay", "s1_4_early_stopping",
                   "s1_4_lr_schedule", "s1_4_modern_regularisers", "s1_5_architecture", "s1_6_best",
                   "s1_7_robustness", "s2_1_mlp",
                   "s2_2_alexnet_feature", "s2_3_weights", "s2_4_alexnet_finetune", "s2_5_guided_backprop"]


def tiny_overrides(root: Path, cache: Path, experiment: str) -> list[str]:
    small = ["model.pretrained=false", "model.input_size=64", "+model.head=[16]"] if "alexnet" in experiment else \
        ["model.input_size=16"] if "mlp" not in experiment and "weights" not in experiment else []
    if "finetune" in experiment or "guided" in experiment:
        small = ["model.pretrained=false", "model.input_size=64"]
    return [f"experiment={experiment}", "debug=fast", "data=imagefolder", f"data.root={root}",
            f"paths.cache_dir={cache}", *small]


def sweep_params(overrides: list[str]):
    """hydra.sweeper.params of the composed train config (facecls' compose leaves the hydra node out)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    return OmegaConf.select(cfg, "hydra.sweeper.params") or {}


def sweep_combinations(params) -> list[list[str]]:
    choices = [[f"{k}={v.strip()}" for v in str(values).split(",")] for k, values in params.items()]
    return [list(c) for c in itertools.product(*choices)] or [[]]


def test_every_report_section_has_an_experiment():
    assert sorted(REPORT_SECTIONS) == EXPERIMENTS


def test_modern_regulariser_options_switch_on_what_they_name():
    """reg=warmup|ema|mixup|cutmix are one-word switches for settings that live elsewhere (sched,
    trainer, aug); reg comes after those groups, so its value wins, and the command line wins over it."""
    plain = compose("train", [])
    settings = {"warmup": ("sched.warmup_epochs", 3), "ema": ("trainer.ema.decay", 0.99),
                "mixup": ("aug.mixup_alpha", 0.2), "cutmix": ("aug.cutmix_alpha", 1.0)}
    for option, (key, value) in settings.items():
        assert OmegaConf.select(plain, key) in (0, None), key
        assert OmegaConf.select(compose("train", [f"reg={option}", "aug=basic", "sched=cosine"]), key) == value
    both = compose("train", ["reg=[dropout,ema]", "trainer.ema.decay=0.9"])
    assert both.reg.dropout.p == 0.5 and both.trainer.ema.decay == 0.9
    params = sweep_params(["experiment=s1_4_modern_regularisers"])
    assert params["reg"] == "none," + ",".join(settings)


# s2_5_guided_backprop only includes s2_4_alexnet_finetune (the same run, drawn afterwards): slow, as the
# s2_4_alexnet_finetune case runs that very config
@pytest.mark.parametrize("experiment", [pytest.param(e, marks=pytest.mark.slow) if e == "s2_5_guided_backprop" else e
                                        for e in EXPERIMENTS])
def test_experiment_composes_and_runs_one_tiny_epoch(experiment, tiny_faces, tmp_path):
    from facecls.training.run import run_training

    base = tiny_overrides(tiny_faces, tmp_path / "cache", experiment)
    if "head" in " ".join(base):
        base = [o for o in base if not o.startswith("+model.head")] + ["model.head=[16]"]
    combos = sweep_combinations(sweep_params(base))
    for combo in combos:  # every sweep value must compose
        compose("train", base + combo)
    job = compose("train", base + combos[0])
    metrics = run_training(job, tmp_path / "run")
    assert metrics["epochs_run"] == 1 and metrics["test_acc"] is not None
    assert not (tmp_path / "run" / "checkpoints").exists()  # debug=fast writes no checkpoints


def test_debug_overfit_reaches_full_train_accuracy(compose_train, tmp_path):
    from facecls.training.run import run_training

    cfg = compose_train("debug=overfit", "trainer.batch_size=8", "trainer.max_epochs=30")
    run_training(cfg, tmp_path / "run")
    final_train_acc = float(read_history(tmp_path / "run")[-1]["train_acc"])
    assert final_train_acc >= 0.99


def test_lfw_missing_files_say_where_to_put_them(tmp_path):
    from facecls.data.lfw import lfw_people

    with pytest.raises(UserError, match=r"LFW not found under .*lfw-py.*lfw_funneled/<Person_Name>"):
        lfw_people(tmp_path)
    with pytest.raises(UserError, match="cannot be downloaded automatically"):
        lfw_people(tmp_path, download=True)


def test_lfw_extracted_folder_keeps_people_with_enough_faces(tmp_path, tiny_faces):
    import shutil

    from facecls.data.lfw import lfw_people

    images = tmp_path / "lfw-py" / "lfw_funneled"
    for n, person in [(5, "Ann_Lee"), (3, "Bo_Chen"), (1, "Cy_Dee"), (4, "Di_Eve")]:
        (images / person).mkdir(parents=True)
        for i, src in enumerate(sorted(next(tiny_faces.iterdir()).glob("*.jpg"))[:n]):
            shutil.copy(src, images / person / f"{person}_{i + 1:04d}.jpg")
    found = lfw_people(tmp_path, min_faces_per_person=3)
    assert found.classes == ["Ann_Lee", "Bo_Chen", "Di_Eve"]
    assert len(found.files) == 12 and found.files[0] == "Ann_Lee/Ann_Lee_0001.jpg"
