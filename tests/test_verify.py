"""`facecls verify`: a hand-made LFW tree and pairs file give the known answer through the command;
verify.json holds the documented keys; pairs=auto writes its pairs; every bad input is one line."""
from __future__ import annotations

import pytest
from torch import nn

from facecls.cli import main as facecls
from facecls.errors import UserError
from facecls.models.base import FaceModel

from helpers import read_json, train_tiny_checkpoint, write_face_tree

PEOPLE = {"alice": 3, "bob": 3, "carol": 3, "dave": 2, "erin": 2, "frank": 1}
# 2 folds x (2 same + 2 different); 14 distinct images: alice 1-3, bob 1-3, carol 1-3, dave 1-2, erin 1-2, frank 1
PAIRS = """2\t2
alice\t1\t2
bob\t1\t3
alice\t1\tbob\t2
carol\t1\tdave\t1
carol\t2\t3
dave\t1\t2
erin\t1\tfrank\t1
alice\t3\terin\t2
"""
KEYS = {"accuracy_mean", "accuracy_std", "accuracy_stderr", "accuracy_std_kind", "fold_accuracies",
        "fold_thresholds", "roc_auc", "eer", "tar_at_far", "far_left_out", "threshold", "threshold_rule",
        "n_pairs", "n_same", "n_different", "n_folds", "model_fingerprint", "embedding", "images", "flip", "seconds"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A classifier trained on 12 synthetic people (enough test people for 2 folds of pairs=auto)."""
    from facecls.data.synthetic import write_dataset

    base = tmp_path_factory.mktemp("verify")
    tree = write_face_tree(base / "lfw", PEOPLE)
    (base / "pairs.txt").write_text(PAIRS)
    faces = write_dataset(base / "faces", num_classes=12, images_per_class=10, image_size=24, progress=False)
    return train_tiny_checkpoint(base, faces), tree, base


def one_line_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        facecls(["verify", *args])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_pairs_file_known_answer_through_the_command(setup, tmp_path, monkeypatch):
    ckpt, tree, base = setup
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    facecls(["verify", f"ckpt={ckpt}", f"pairs={base / 'pairs.txt'}", f"data.root={tree}", f"out={tmp_path}",
             "verify.flip=true"])
    result = read_json(tmp_path / "verify.json")
    assert KEYS <= set(result)
    # identical photos embed identically (similarity 1), different people's do not: every fold is right
    assert (result["n_pairs"], result["n_same"], result["n_folds"], result["images"]) == (8, 4, 2, 14)
    assert result["fold_accuracies"] == [1.0, 1.0] and result["accuracy_mean"] == 1.0
    assert result["roc_auc"] == 1.0 and result["eer"] == 0.0
    assert result["accuracy_stderr"] == 0.0 and result["accuracy_std"] == 0.0
    assert result["flip"]["used"] and set(result["flip"]["without"]) >= {"accuracy_mean", "roc_auc"}
    assert [x["far"] for x in result["far_left_out"]] == [0.1, 0.01, 0.001]  # 4 different pairs measure none
    assert (tmp_path / "roc.png").stat().st_size > 0 and (tmp_path / "similarities.png").stat().st_size > 0


def test_pairs_auto_draws_from_the_test_people_and_writes_them(setup, tmp_path, monkeypatch):
    ckpt, _, _ = setup
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    facecls(["verify", f"ckpt={ckpt}", "pairs=auto", "verify.folds=2", "verify.pairs_per_fold=1", f"out={tmp_path}"])
    result = read_json(tmp_path / "verify.json")
    assert result["n_pairs"] == 4 and result["n_folds"] == 2 and len(result["fold_accuracies"]) == 2
    written = (tmp_path / "pairs.csv").read_text().splitlines()  # tiny_faces' files are not LFW-named
    assert written[0] == "file_a,file_b,same,fold" and len(written) == 5


def test_pairs_auto_sizes_itself_by_default_and_an_explicit_number_too_large_is_one_line(setup, tmp_path, capsys,
                                                                                         monkeypatch):
    ckpt, _, _ = setup
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    facecls(["verify", f"ckpt={ckpt}", "pairs=auto", "verify.folds=2", f"out={tmp_path}"])  # default: auto
    result = read_json(tmp_path / "verify.json")
    per_fold = result["n_same"] // 2
    assert 1 <= per_fold < 300 and result["n_pairs"] == 4 * per_fold and result["n_folds"] == 2
    line = one_line_error(capsys, f"ckpt={ckpt}", "pairs=auto", "verify.folds=2", "verify.pairs_per_fold=300",
                          f"out={tmp_path / 'x'}")
    assert "error: cannot draw 2 identity-disjoint folds of 300 same" in line


def test_bad_pairs_lines_are_one_line_with_file_and_line(setup, tmp_path, capsys, monkeypatch):
    ckpt, tree, _ = setup
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    bad_person = tmp_path / "person.txt"
    bad_person.write_text(PAIRS.replace("carol\t2\t3", "zoe\t2\t3"))
    line = one_line_error(capsys, f"ckpt={ckpt}", f"pairs={bad_person}", f"data.root={tree}", f"out={tmp_path}")
    assert "person.txt line 6" in line and "'zoe'" in line
    bad_number = tmp_path / "number.txt"
    bad_number.write_text(PAIRS.replace("bob\t1\t3", "bob\t1\t7"))
    line = one_line_error(capsys, f"ckpt={ckpt}", f"pairs={bad_number}", f"data.root={tree}", f"out={tmp_path}")
    assert "number.txt line 3" in line and "no image number 7" in line
    assert not (tmp_path / "verify.json").exists()


def test_more_folds_than_the_pairs_allow_is_one_line(setup, tmp_path, capsys, monkeypatch):
    ckpt, _, _ = setup
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    line = one_line_error(capsys, f"ckpt={ckpt}", "pairs=auto", "verify.folds=50", f"out={tmp_path}")
    assert "50 identity-disjoint folds" in line and "verify.folds" in line


class AllConvolutional(FaceModel):
    """A classifier without any linear layer (its classes come from a 1x1 convolution)."""

    def __init__(self, num_classes: int, input_size: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def test_a_checkpoint_without_an_embedding_layer_is_one_line(setup, tmp_path):
    from facecls.faces.embedder import load_embedder
    from facecls.inference.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(setup[0])
    ckpt.config["model"] = {"_target_": f"{__name__}.AllConvolutional", "input_size": 16}
    ckpt.model = AllConvolutional(len(ckpt.classes)).state_dict()
    save_checkpoint(tmp_path / "allconv.pt", ckpt)
    with pytest.raises(UserError) as err:
        load_embedder(tmp_path / "allconv.pt", "cpu")
    assert "no usable embedding layer" in str(err.value) and "\n" not in str(err.value)


def test_summarize_pairs_verification_folds_of_two_losses(tmp_path):
    """verify.json folds feed `facecls summarize compare_metric=verif_acc`: a paired difference over
    the folds with its CI, as for classification; runs verified on other pairs never pair."""
    import json

    from facecls.sweeps.compare import compare_groups
    from facecls.sweeps.summary import write_summary

    base = [0.80, 0.82, 0.78, 0.81, 0.79, 0.83, 0.80, 0.77, 0.82, 0.80]
    gains = [0.05, 0.04, 0.06, 0.05, 0.05, 0.04, 0.06, 0.05, 0.05, 0.05]
    for loss, folds, digest in (("cross_entropy", base, "p1"), ("arcface", [b + g for b, g in zip(base, gains)], "p1"),
                                ("cosface", base, "other-pairs")):
        run = tmp_path / "sweep" / loss
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- loss={loss}\n")
        (run / "metrics.json").write_text(json.dumps({"stop_reason": "max_epochs", "test_acc": 0.5}))
        (run / "verify.json").write_text(json.dumps({"fold_accuracies": folds, "pairs_digest": digest}))
    summary, text = write_summary([tmp_path / "sweep"], compare="loss:cross_entropy", compare_metric="verif_acc",
                                  plots=False)
    groups = {g.settings["loss"]: g for g in summary.groups}
    assert groups["arcface"].stat("verif_acc").n == 10 and groups["arcface"].stat("test_acc").n == 1
    assert groups["cross_entropy"].stat("verif_acc").mean == pytest.approx(sum(base) / 10)
    rows = {c.other.label: c.result for c in compare_groups(summary, "loss:cross_entropy", "verif_acc")}
    assert rows["loss=arcface"].n == 10 and rows["loss=arcface"].mean == pytest.approx(0.05)
    low, high = rows["loss=arcface"].interval
    assert 0 < low < 0.05 < high
    assert rows["loss=cosface"].n == 0  # verified on other pairs: nothing to pair
    assert "verif acc" in text and "Δ verif_acc" in text


def test_make_data_lfw_layout_writes_pairs_over_held_out_people(tmp_path, monkeypatch):
    """`facecls make-data synthetic layout=lfw`: an LFW tree and a pairs.txt whose people are exactly
    those a data.split.by=identity run holds out (and that reads back against the tree)."""
    from facecls.data.split import assign_identity_splits
    from facecls.faces.pairs import read_pairs

    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "lfw"
    facecls(["make-data", "synthetic", "layout=lfw", f"out={out}", "num_classes=40", "images_per_class=3",
             "image_size=16", "pairs.folds=2", "pairs.per_fold=auto"])
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert (out / names[0] / f"{names[0]}_0001.jpg").is_file()
    held_out = {n for n, s in zip(names, assign_identity_splits(names, list(range(40)), names, 0.7, 0.15, 0.15, 0))
                if s == "test"}
    pairs = read_pairs(out / "pairs.txt", out)
    assert {p.fold for p in pairs} == {0, 1} and sum(p.same for p in pairs) * 2 == len(pairs)
    assert {q.parent.name for p in pairs for q in (p.path_a, p.path_b)} <= held_out


def test_view1_one_fold_takes_its_threshold_from_another_file(setup, tmp_path, monkeypatch):
    ckpt, tree, base = setup
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    dev_test = tmp_path / "pairsDevTest.txt"
    dev_test.write_text("2\nalice\t2\t3\ncarol\t1\t3\nbob\t2\tdave\t2\nerin\t2\tcarol\t3\n")
    args = ["verify", f"ckpt={ckpt}", f"pairs={dev_test}", f"data.root={tree}", f"out={tmp_path}"]
    facecls(args)
    alone = read_json(tmp_path / "verify.json")
    assert alone["n_folds"] == 1 and alone["accuracy_mean"] is None and alone["roc_auc"] == 1.0
    facecls([*args, f"verify.threshold_pairs={base / 'pairs.txt'}"])
    fitted = read_json(tmp_path / "verify.json")
    assert fitted["accuracy_mean"] == 1.0 and "pairs.txt" in fitted["threshold_rule"]
