"""`facecls robustness`: variations built from conf/variation, exact repeats, identity = clean."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import v2

from facecls.errors import UserError
from facecls.inspect.robustness import evaluate_under, variation_settings

from helpers import finish_cli, read_csv, run_cli, start_cli, train_runs

CONF = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_faces):
    base = tmp_path_factory.mktemp("robustness")
    ckpts, env = train_runs(base, tiny_faces, ["convnet"])
    return ckpts["convnet"], env


def variations(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("robustness", overrides=["ckpt=x", *overrides]).variation


def test_cli_identity_equals_clean_and_two_runs_are_identical(trained, tmp_path):
    ckpt, env = trained
    args = ["robustness", f"ckpt={ckpt}", "variation=[identity,gaussian_blur,rotation]",
            "variation.gaussian_blur.sigma=[0.5,2]"]
    # the two repeats and `facecls eval` (compared below) side by side, each into its own folder
    jobs = [start_cli(*args, f"out={tmp_path / 'a'}", cwd=tmp_path, env=env),
            start_cli(*args, f"out={tmp_path / 'b'}", cwd=tmp_path, env=env),
            start_cli("eval", f"ckpt={ckpt}", f"out={tmp_path / 'e'}", cwd=tmp_path, env=env)]
    proc = [finish_cli(job) for job in jobs][0]
    first = (tmp_path / "a" / "robustness.csv").read_text()
    assert first == (tmp_path / "b" / "robustness.csv").read_text()  # seeded: repeats exactly
    rows = read_csv(tmp_path / "a" / "robustness.csv")
    assert list(rows[0]) == ["variation", "parameter", "value", "split", "accuracy", "loss", "drop"]
    assert [(r["variation"], r["parameter"], r["split"]) for r in rows] == [
        ("clean", "-", "val"), ("clean", "-", "test"), ("identity", "-", "val"), ("identity", "-", "test"),
        ("gaussian_blur", "sigma=0.5", "val"), ("gaussian_blur", "sigma=0.5", "test"),
        ("gaussian_blur", "sigma=2", "val"), ("gaussian_blur", "sigma=2", "test"),
        ("rotation", "degrees=45", "val"), ("rotation", "degrees=45", "test")]
    clean = {r["split"]: r for r in rows if r["variation"] == "clean"}
    for r in rows:
        assert float(r["drop"]) == pytest.approx(float(clean[r["split"]]["accuracy"]) - float(r["accuracy"]))
        if r["variation"] == "identity":
            same = clean[r["split"]]
            assert (r["accuracy"], r["loss"], r["drop"]) == (same["accuracy"], same["loss"], "0.0")
    blur = [r for r in rows if r["variation"] == "gaussian_blur"]
    assert len({r["loss"] for r in blur}) == 4  # every blur changes the scores
    with Image.open(tmp_path / "a" / "robustness.png") as im:
        assert im.format == "PNG" and im.size[0] > 400  # bars + the sigma curve
    assert "gaussian_blur sigma=2" in proc.stdout + proc.stderr
    assert (tmp_path / "a" / "robustness_per_class.csv").read_text() == (
        tmp_path / "b" / "robustness_per_class.csv").read_text()

    # Per class: the clean and identity test rows are exactly `facecls eval`'s eval_per_class.csv.
    evaluated = read_csv(tmp_path / "e" / "eval_per_class.csv")
    per_class = read_csv(tmp_path / "a" / "robustness_per_class.csv")
    assert list(per_class[0]) == ["variation", "parameter", "value", "split", "class", "precision", "recall", "f1",
                                  "support"]
    assert len(per_class) == len(rows) * len(evaluated)  # every setting and split, every class
    for variation in ("clean", "identity"):
        mine = [{k: r[k] for k in evaluated[0]} for r in per_class
                if (r["variation"], r["split"]) == (variation, "test")]
        assert mine == evaluated
    for r in rows:  # each row's recalls, weighted by support, give back its accuracy
        cells = [c for c in per_class if (c["variation"], c["parameter"], c["split"]) ==
                 (r["variation"], r["parameter"], r["split"])]
        hits = sum(float(c["recall"]) * int(c["support"]) for c in cells)
        assert hits / sum(int(c["support"]) for c in cells) == pytest.approx(float(r["accuracy"]), abs=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "e"]  # nothing else in the working dir


def test_unknown_variation_is_one_line_listing_the_choices(tmp_path, cache_env):
    proc = run_cli("robustness", "ckpt=x.pt", "variation=[rotation,fisheye]", cwd=tmp_path, env=cache_env,
                   check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown variation 'fisheye'" in lines[0]
    for name in ("colorjitter", "gaussian_blur", "identity", "perspective", "rotation", "scale", "translate"):
        assert name in lines[0]


def test_default_variations_build_the_report_transforms():
    settings = variation_settings(variations())
    assert [s.variation for s in settings] == ["colorjitter"] + ["gaussian_blur"] * 4 + [
        "perspective", "rotation", "translate", "scale"]
    blur = [s.transform.transforms[0] for s in settings if s.variation == "gaussian_blur"]
    assert [b.sigma for b in blur] == [[0.5, 0.5], [1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    assert all(s.swept for s in settings if s.variation == "gaussian_blur")
    by_name = {s.variation: s.transform.transforms[0] for s in settings}
    assert isinstance(by_name["rotation"], v2.RandomRotation) and by_name["rotation"].degrees == [-45.0, 45.0]
    assert by_name["translate"].translate == [0.2, 0.2] and by_name["scale"].scale == [0.7, 1.3]
    assert by_name["perspective"].distortion_scale == 0.5 and by_name["colorjitter"].hue == (-0.1, 0.1)
    swept = variation_settings(variations("variation=[rotation]", "variation.rotation.degrees=[10,20]"))
    assert [(s.parameter, s.transform.transforms[0].degrees) for s in swept] == [
        ("degrees=10", [-10.0, 10.0]), ("degrees=20", [-20.0, 20.0])]


def test_broken_variations_are_user_errors():
    cfg = variations("variation=[rotation]")
    cfg.rotation.sweep = "angle"
    with pytest.raises(UserError, match="sweep=angle names no key.*degrees"):
        variation_settings(cfg)
    cfg = variations("variation=[gaussian_blur]", "variation.gaussian_blur.kernel_size=4")
    with pytest.raises(UserError, match="gaussian_blur' \\(sigma=0.5\\) cannot be built.*odd"):
        variation_settings(cfg)
    with pytest.raises(UserError, match="no transforms list"):
        variation_settings(OmegaConf.create({"mine": {"sweep": None}}))


def test_seed_fixes_the_random_draws_and_each_image_gets_its_own(trained):
    from facecls.inference.loading import load_run

    ckpt, env = trained
    run = load_run(ckpt, "cpu", None, env["FACECLS_CACHE_DIR"], progress=False)
    settings = run.eval_settings(batch_size=8)
    rotate = v2.RandomRotation(90)
    a = evaluate_under(run, run.data.val, rotate, settings, seed=1)
    again = evaluate_under(run, run.data.val, rotate, settings, seed=1)
    assert (a["loss"], a["acc"]) == (again["loss"], again["acc"])
    assert torch.equal(a["predictions"], again["predictions"])
    assert a["loss"] != evaluate_under(run, run.data.val, rotate, settings, seed=2)["loss"]
    # Per image: two copies of one image in one batch are rotated differently.
    from facecls.data.batches import BatchPreparer

    twice = run.data.val.inputs[:1].repeat(2, 1, 1, 1)
    torch.manual_seed(0)
    out = BatchPreparer(run.data.preprocess, run.device, augment=rotate)(twice, train=True)
    assert not torch.equal(out[0], out[1])
