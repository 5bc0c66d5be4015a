"""`facecls predict ckpt=PATH input=FILE_OR_DIR`: a row per readable image, unreadable files
listed and skipped, class folders scored, threshold → unknown, a contact sheet, and the same
predictions as scoring the test split through the training code path."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image

from facecls.errors import UserError

from helpers import read_csv, read_json, run_cli, train_runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_faces):
    """A one-epoch ConvNet `facecls train` run (FAST): a copy of the session's (helpers.train_runs)."""
    ckpts, env = train_runs(tmp_path_factory.mktemp("predict"), tiny_faces, ["convnet"])
    return ckpts["convnet"], env


def test_folder_with_a_corrupt_file_and_the_same_classes_as_eval(trained, tiny_faces, tmp_path):
    from facecls.inference.evaluate import evaluate
    from facecls.inference.loading import load_run

    ckpt, env = trained
    photos = tmp_path / "photos"
    shutil.copytree(tiny_faces, photos)
    first = sorted(p for p in photos.iterdir() if p.is_dir())[0]
    (first / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    out = tmp_path / "out"
    proc = run_cli("predict", f"ckpt={ckpt}", f"input={photos}", f"out={out}", "count=5", cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "36 image(s) classified" in proc.stdout
    assert (proc.stdout + proc.stderr).count("36 image(s)") == 1  # the summary once, not printed and logged

    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 36 and f"{first.name}/broken.jpg" not in {r["file"] for r in rows}
    assert [r["file"] for r in read_csv(out / "skipped.csv")] == [f"{first.name}/broken.jpg"]
    assert "Skipped 1 unreadable file(s)" in proc.stdout + proc.stderr
    classes = sorted(p.name for p in tiny_faces.iterdir())
    assert list(rows[0]) == ["file", "true", "correct", "predicted", "confidence", "top1", "p1", "top2", "p2",
                             "top3", "p3"]  # top-5 is capped at the 3 classes
    for r in rows:
        assert r["true"] == r["file"].split("/")[0] and r["predicted"] == r["top1"] in classes
        assert float(r["p1"]) >= float(r["p2"]) >= float(r["p3"])
        assert float(r["p1"]) + float(r["p2"]) + float(r["p3"]) == pytest.approx(1, abs=1e-5)
    summary = read_json(out / "predict.json")
    assert summary["images"] == 36 and summary["skipped"] == [f"{first.name}/broken.jpg"]
    assert summary["accuracy"] == pytest.approx(sum(int(r["correct"]) for r in rows) / 36)
    with Image.open(out / "contact_sheet.png") as image:
        image.verify()
        assert image.format == "PNG"

    # The test split as `facecls eval` scores it (load_run + evaluate): the same classes.
    run = load_run(ckpt, "cpu", cache_dir=str(tmp_path / "cache"), progress=False)
    scored = evaluate(run.model, run.data.test, run.prepare, run.eval_settings(), return_predictions=True)
    expected = {f: run.classes[int(p)] for f, p in zip(run.data.test.files, scored["predictions"])}
    predicted = {r["file"]: r["predicted"] for r in rows}
    assert expected and {f: predicted[f] for f in expected} == expected


def test_single_file_threshold_and_bad_input(trained, tiny_faces, tmp_path):
    from facecls.config.compose import compose
    from facecls.inspect.predict import run_predict

    ckpt, _ = trained
    image = sorted(tiny_faces.rglob("*.jpg"))[0]
    out = tmp_path / "one"
    summary = run_predict(compose("predict", [f"ckpt={ckpt}", f"input={image}", f"out={out}", "threshold=1.0",
                                              "top_k=2", "trainer.device=cpu", "progress=false"]))
    (row,) = read_csv(out / "predictions.csv")
    assert row["file"] == image.name and "true" not in row  # no class folder: no accuracy
    assert row["predicted"] == "unknown" and float(row["confidence"]) < 1.0 and "top3" not in row
    assert summary["unknown"] == 1 and summary["accuracy"] is None
    assert read_json(out / "predict.json")["unknown"] == 1
    for override, message in ((f"input={tmp_path / 'nope'}", "does not exist"), ("threshold=2", "threshold=2"),
                              ("top_k=0", "top_k=0")):
        with pytest.raises(UserError, match=message):
            run_predict(compose("predict", [f"ckpt={ckpt}", f"input={image}", f"out={out}", override]))
