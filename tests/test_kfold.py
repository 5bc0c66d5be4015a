"""k-fold cross-validation (data.split.folds / data.split.fold): the folds partition the
non-test images, leave the test split alone, stay put when files are added, work with
pre-split folders, and a 3-fold sweep summarizes into one configuration with n=3."""
from __future__ import annotations

import pytest

from facecls.data.split import assign_folds, assign_splits, check_folds
from facecls.errors import UserError

from helpers import TINY, read_csv, read_json, run_cli

FILES = [f"person_{c}/img_{i:03d}.jpg" for c in range(4) for i in range(60)]


def folds_of(files: list[str], k: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    base = assign_splits(files, 0.7, 0.15, 0.15, seed=seed)
    return base, [assign_folds(files, base, k, i, seed=seed) for i in range(k)]


def test_validation_folds_partition_the_non_test_images():
    base, folds = folds_of(FILES, 5)
    non_test = {f for f, s in zip(FILES, base) if s != "test"}
    vals = [{f for f, s in zip(FILES, splits) if s == "val"} for splits in folds]
    assert all(vals) and sum(len(v) for v in vals) == len(non_test)  # pairwise disjoint …
    assert set().union(*vals) == non_test                           # … and every one covered once
    for splits in folds:
        assert [s for s in splits if s == "test"] == [s for s in base if s == "test"]
        assert all((s == "test") == (b == "test") for s, b in zip(splits, base))  # test untouched
        assert {s for s, b in zip(splits, base) if b != "test"} == {"train", "val"}


def test_folds_do_not_move_when_files_are_added():
    before = dict(zip(FILES, folds_of(FILES, 3)[1][1]))
    grown = FILES + [f"person_{c}/new_{i}.jpg" for c in range(5) for i in range(30)]
    after = dict(zip(grown, folds_of(grown, 3)[1][1]))
    assert all(after[f] == before[f] for f in FILES)
    assert folds_of(FILES, 3, seed=1)[1][1] != folds_of(FILES, 3)[1][1]  # the seed does change them


def test_pre_split_folders_draw_folds_from_train_and_val():
    fixed = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    files = [f"{s}/a/{i}.jpg" for i, s in enumerate(fixed)]
    vals = [[f for f, s in zip(files, assign_folds(files, fixed, 4, i, seed=0)) if s == "val"] for i in range(4)]
    assert sorted(f for v in vals for f in v) == sorted(files[:50])  # train+val, each image once
    assert all(assign_folds(files, fixed, 4, i, seed=0)[50:] == ["test"] * 10 for i in range(4))


@pytest.mark.parametrize("folds, fold, message", [(1, 0, "data.split.folds=1 is invalid"),
                                                  (3, 3, r"data.split.fold=3 is out of range .* 0…2"),
                                                  (3, -1, "data.split.fold=-1 is out of range"),
                                                  ("x", 0, "data.split.folds=x is invalid")])
def test_fold_range_errors(folds, fold, message):
    with pytest.raises(UserError, match=message):
        check_folds(folds, fold)
    assert check_folds(None, 7) is None  # k-fold off: fold is not looked at


def test_build_data_uses_the_fold_and_checks_its_range(compose_train):
    from facecls.data.dataset import build_data
    from facecls.data.preprocess import Preprocess

    bundles = [build_data(compose_train("data.split.folds=3", f"data.split.fold={i}").data, Preprocess(16), None,
                          progress=False) for i in range(3)]
    plain = build_data(compose_train().data, Preprocess(16), None, progress=False)
    assert all(b.test.files == plain.test.files for b in bundles)  # the test split is untouched
    vals = [set(b.val.files) for b in bundles]
    assert sum(map(len, vals)) == 36 - len(plain.test) and len(set().union(*vals)) == 36 - len(plain.test)
    with pytest.raises(UserError, match=r"data.split.fold=3 is out of range — with data.split.folds=3 use 0…2"):
        build_data(compose_train("data.split.folds=3", "data.split.fold=3").data, Preprocess(16), None)


def test_three_fold_sweep_summarizes_into_one_row(tmp_path, tiny_faces, cache_env):
    from facecls.sweeps.summary import write_summary

    sweep = tmp_path / "sweep"
    fast = [*TINY[:1], "trainer.max_epochs=1", *TINY[2:]]
    run_cli("train", "-m", "data=imagefolder", f"data.root={tiny_faces}", *fast, "data.split.folds=3",
            "data.split.fold=range(3)", f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=cache_env)
    summary, text = write_summary([sweep], plots=False)  # default average_over: seed and data.split.fold
    assert summary.averaged_over == ["data.split.fold"] and len(summary.groups) == 1
    runs = read_csv(sweep / "summary.csv")
    assert sorted(r["data.split.fold"] for r in runs) == ["0", "1", "2"]
    (group,) = read_csv(sweep / "summary_groups.csv")
    assert group["test_acc_n"] == "3" and group["finished"] == "3"
    low, high = float(group["test_acc_ci95_low"]), float(group["test_acc_ci95_high"])
    assert low <= float(group["test_acc_mean"]) <= high
    metrics = [read_json(sweep / str(job) / "metrics.json") for job in range(3)]
    assert len({m["test_size"] for m in metrics}) == 1  # the same test split in every fold
    # the three validation folds together are every non-test image, once
    assert sum(m["val_size"] for m in metrics) == 36 - metrics[0]["test_size"]
    assert {m["train_size"] + m["val_size"] for m in metrics} == {36 - metrics[0]["test_size"]}


def test_kfold_experiment_preset_composes_five_folds():
    from facecls.config.compose import compose

    cfg = compose("train", ["experiment=compare/kfold5"])
    assert cfg.data.split.folds == 5
