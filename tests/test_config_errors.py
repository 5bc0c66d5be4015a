"""Each user mistake gives one line on stderr naming the cause and the fix — no traceback."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import cli_env, run_cli

CASES = {
    "unknown model": (["model=foo"], ["unknown model 'foo'", "convnet", "mlp"]),
    "a backbone given as a model": (["model=resnet"], ["model=finetune model.name=resnet18"]),
    "a typo of a model": (["model=mlpp"], ["did you mean model=mlp?"]),
    "unknown key": (["trainer.foo=1"], ["unknown key 'trainer.foo'", "max_epochs"]),
    "dropout out of range": (["reg=dropout", "reg.dropout.p=1.5"], ["reg.dropout.p=1.5", "0 <= p < 1"]),
    "zero batch size": (["trainer.batch_size=0"], ["trainer.batch_size=0", ">= 1"]),
    "negative lr": (["optim.lr=-1"], ["optim.lr=-1", "> 0"]),
    "wrong type": (["trainer.max_epochs=ten"], ["trainer.max_epochs", "not a number"]),
    "missing data root": (["data=imagefolder"], ["data.root is not set"]),
    "root does not exist": (["data=imagefolder", "data.root=/no/such/dir"], ["'/no/such/dir' does not exist"]),
    "ratios do not sum to 1": (["data.split.train=0.9"], ["sum to", "not 1"]),
    "negative patience": (["reg=early_stopping", "reg.early_stopping.patience=-1"], ["patience=-1"]),
    "cuda without a gpu": (["trainer.device=cuda"], ["no usable CUDA GPU", "trainer.device=cpu"]),
    "a list for settings": (["data.faces=[1,2]"], ["data.faces holds settings (mode,", "data.faces.mode=…"]),
    "an unknown node": (["trainer.foo.bar=1"], ["unknown key 'trainer.foo' (in trainer.foo.bar)", "max_epochs"]),
    "a dict with an unknown key": (["data.faces={a:1}"], ["unknown key 'data.faces.a'", "mode, margin"]),
    "unknown command": None,
}


LAYOUTS = {"one class": "only one class", "empty class": "zz_empty", "no images": "no readable images"}


def bad_folder(layout: str, root, tiny_faces):
    if layout == "one class":
        first = sorted(tiny_faces.iterdir())[0]
        shutil.copytree(first, root / first.name)
    elif layout == "empty class":
        shutil.copytree(tiny_faces, root)
        (root / "zz_empty").mkdir()
    else:
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        (root / "a" / "x.jpg").write_text("not an image")
        (root / "b" / "y.jpg").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def failed(tmp_path_factory, tiny_faces):
    """{case: the finished `facecls` process} for every case below, each in its own folder with its
    own cache, four at a time: each ends soon after Python starts, which is most of its time, and
    one after another they took a minute on two cores."""
    base = tmp_path_factory.mktemp("errors")
    commands = {name: ["train", "trainer.max_epochs=1", *case[0]] for name, case in CASES.items() if case}
    commands["unknown command"] = ["trian"]
    for layout in LAYOUTS:
        root = bad_folder(layout, base / layout.replace(" ", "-") / "faces", tiny_faces)
        commands[layout] = ["train", "data=imagefolder", f"data.root={root}", "trainer.max_epochs=1"]

    def run(numbered):
        number, name = numbered
        folder = base / str(number)
        folder.mkdir()
        return run_cli(*commands[name], cwd=folder, env=cli_env(folder / "cache"), check=False)

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(commands, pool.map(run, enumerate(commands))))


@pytest.mark.parametrize("name", [k for k, v in CASES.items() if v])
def test_config_error_is_one_line(name, failed):
    _, expected = CASES[name]
    proc = failed[name]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("facecls: error: ")
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_unknown_command(failed):
    proc = failed["unknown command"]
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr and "train" in proc.stderr


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_data_folder(layout, failed):
    proc = failed[layout]
    assert proc.returncode == 2
    assert LAYOUTS[layout] in proc.stderr and "Traceback" not in proc.stderr


def test_group_choices_include_sub_folders_but_not_shared_blocks():
    from facecls.config.compose import config_dir
    from facecls.config.overrides import available_choices

    experiments = available_choices(config_dir(), "experiment")
    assert "transfer/backbones" in experiments and "s1_2_baseline" in experiments
    assert available_choices(config_dir(), "data") == ["imagefolder", "lfw", "synthetic"]  # not shared/split_cache
