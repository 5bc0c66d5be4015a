"""Open-set models behind `facecls serve` and `facecls export`: POST /identify answers as `facecls
identify` answers for the same photos; /verify and exported files carry the threshold `facecls
verify` chose; a gallery of another model is refused at start-up in one line; the commands that
score class logits refuse an embedding checkpoint in one line (and verify/export still take it)."""
from __future__ import annotations

import shutil

import pytest

from facecls.cli import main as facecls
from facecls.config.compose import compose
from facecls.errors import UserError

from helpers import read_csv, read_json, train_tiny_checkpoint, write_face_tree

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytestmark = pytest.mark.usefixtures("no_downloads")

ENROLLED = {"ann": 2, "ben": 1, "cem": 2}  # 5 photos x 2 other people = 10 impostor scores: FAR 0.1 measurable
STRANGERS = {"dia": 1, "eli": 1}
PAIRS = "2\t2\nann\t1\t2\ncem\t1\t2\nann\t1\tben\t1\ncem\t1\tdia\t1\n" \
        "cem\t2\t1\nann\t2\t1\nben\t1\teli\t1\ndia\t1\tann\t2\n"


@pytest.fixture(scope="module")
def open_set(tmp_path_factory):
    """An ArcFace embedding checkpoint, its verify.json (a hand-made pairs file), a face tree of
    enrolled people and strangers, and a gallery of the enrolled people's photos."""
    from facecls.data.synthetic import write_dataset
    from facecls.faces.recognise import run_enroll
    from facecls.faces.verify import run_verify

    base = tmp_path_factory.mktemp("open_set")
    faces = write_dataset(base / "faces", num_classes=8, images_per_class=6, image_size=24, progress=False)
    ckpt = train_tiny_checkpoint(base, faces, "model.embedding_dim=8", "loss=arcface")
    people = write_face_tree(base / "people", {**ENROLLED, **STRANGERS})
    (base / "pairs.txt").write_text(PAIRS)
    run_verify(compose("verify", [f"ckpt={ckpt}", f"pairs={base / 'pairs.txt'}", f"data.root={people}",
                                  "trainer.device=cpu", f"paths.cache_dir={base / 'cache'}"]))
    for name in ENROLLED:
        shutil.copytree(people / name, base / "enrol" / name)
    run_enroll(compose("enroll", [f"ckpt={ckpt}", f"gallery={base / 'enrol'}", f"out={base / 'g.pt'}",
                                  "trainer.device=cpu", "fars=[0.1]"]))
    return ckpt, people, base


def identify(open_set, out: str, *more: str) -> dict:
    from facecls.faces.recognise import run_identify

    _, people, base = open_set
    run_identify(compose("identify", [f"gallery={base / 'g.pt'}", f"input={people}", f"out={base / out}",
                                      "trainer.device=cpu", *more]))
    return {r["file"]: r for r in read_csv(base / out / "identify.csv")}


def test_identify_endpoint_answers_as_facecls_identify(open_set):
    from test_serve import Server, post

    ckpt, people, base = open_set
    photos = sorted(p.relative_to(people).as_posix() for p in people.rglob("*.png"))
    files = [("files", (name, (people / name).read_bytes(), "image/png")) for name in photos]
    srv = Server(ckpt, base, f"gallery={base / 'g.pt'}", "serve.far=0.1", "serve.threads=1")
    try:
        for params, more in (({}, ["far=0.1"]), ({"threshold": 0.9999}, ["threshold=0.9999"])):
            expected = identify(open_set, f"id-{len(more[0])}", *more)
            answer = post(srv, files, "/identify", params=params).json()
            assert len(answer["results"]) == len(photos) == len(expected)
            for got in answer["results"]:
                want = expected[got["file"]]
                assert (got["person"], got["runner_up"], got["decision"]) == \
                       (want["person"], want["runner_up"], want["decision"]), (got, want)
                assert got["similarity"] == pytest.approx(float(want["similarity"]), abs=1e-4)
            if params:  # only a photo of an enrolled person (similarity 1 to their mean) passes 0.9999
                assert {r["file"]: r["decision"] for r in answer["results"]} == \
                       {f: f.split("/")[0] if f.split("/")[0] in ENROLLED else "unknown" for f in photos}
        verified = read_json(base / "run" / "verify.json")
        meta = httpx.get(srv.url + "/metadata").json()
        assert meta["threshold"] == pytest.approx(verified["threshold"]) and meta["threshold_rule"]
        assert meta["gallery"]["people"] == len(ENROLLED) and meta["gallery"]["far"] == 0.1
        pair = post(srv, files[:2], "/verify").json()
        assert pair["same"] is (pair["similarity"] > verified["threshold"])
        assert post(srv, files[:1], "/identify", params={"far": 1e-3}).status_code == 422  # not measurable
    finally:
        srv.stop()


def test_the_page_names_the_enrolled_person_or_unknown(open_set, tmp_path):
    """With an embedding model and a gallery, the page at / identifies: the browser shows what POST
    /identify answers for the same photo (a person, or unknown) and the face the model saw."""
    from test_serve import NEEDS_CHROMIUM, Server, headless_chrome, post

    if NEEDS_CHROMIUM.args[0]:
        pytest.skip(NEEDS_CHROMIUM.kwargs["reason"])
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ckpt, people, base = open_set
    srv = Server(ckpt, base, f"gallery={base / 'g.pt'}", "serve.far=0.1", "serve.threads=1")
    driver = headless_chrome(webdriver, tmp_path)
    try:
        driver.get(srv.url + "/")
        WebDriverWait(driver, 60).until(lambda d: "enrolled people" in d.find_element(By.ID, "model").text)
        for photo in (people / "ann" / sorted(p.name for p in (people / "ann").iterdir())[0],
                      people / "eli" / sorted(p.name for p in (people / "eli").iterdir())[0]):
            want = post(srv, [("files", (photo.name, photo.read_bytes(), "image/png"))], "/identify").json()
            driver.execute_script("document.getElementById('prediction').textContent = ''")
            upload = driver.find_element(By.ID, "file")
            driver.execute_script("arguments[0].hidden = false", upload)
            upload.send_keys(str(photo))
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "prediction").text not in ("", "…"))
            assert driver.find_element(By.ID, "prediction").text == want["results"][0]["decision"]
            assert want["results"][0]["person"] in driver.find_element(By.ID, "top").text
            assert driver.find_element(By.ID, "error").text == ""
            assert driver.find_element(By.ID, "crop").get_attribute("src").startswith("data:image/png;base64,")
    finally:
        driver.quit()
        srv.stop()


def test_a_gallery_of_another_model_or_no_gallery_is_refused(open_set, tmp_path):
    from fastapi.testclient import TestClient

    from facecls.faces.gallery import read_gallery, write_gallery
    from facecls.inference.runners import open_runner
    from facecls.serve.app import Settings, create_app
    from facecls.serve.gallery import open_gallery

    ckpt, people, base = open_set
    runner = open_runner(ckpt)
    other = read_gallery(base / "g.pt")
    other["model"]["fingerprint"] = "0" * 16
    write_gallery(tmp_path / "other.pt", other)
    with pytest.raises(UserError) as err:
        open_gallery(tmp_path / "other.pt", runner, 0.1)
    assert "another model" in str(err.value) and "\n" not in str(err.value)
    with TestClient(create_app(runner, Settings(batching=False))) as client:
        photo = ("files", ("a.png", (people / "ann" / "ann_0001.png").read_bytes(), "image/png"))
        answer = client.post("/identify", files=[photo])
        assert answer.status_code == 409 and "gallery=" in answer.json()["error"]


@pytest.mark.parametrize("command", [["eval"], ["robustness"], ["visualize", "predictions"], ["predict"]])
def test_logit_commands_refuse_an_embedding_checkpoint_in_one_line(open_set, command, capsys):
    ckpt, people, base = open_set
    extra = [f"input={people}", f"out={base / 'pred'}"] if command == ["predict"] else []
    with pytest.raises(SystemExit) as exit_info:
        facecls([*command, f"ckpt={ckpt}", "trainer.device=cpu", *extra])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "embedding model" in err[0] and "facecls verify" in err[0], err


def test_an_export_carries_the_threshold_and_identifies_and_verifies_as_its_checkpoint(open_set, tmp_path,
                                                                                          monkeypatch):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
    from facecls.export.run import run_export
    from facecls.faces.gallery import read_gallery

    ckpt, people, base = open_set
    summary = run_export(compose("export", [f"ckpt={ckpt}", f"cache_dir={base / 'cache'}", "far=null",
                                            f"out={tmp_path / 'model.onnx'}"]))
    meta, verified = summary["metadata"], read_json(base / "run" / "verify.json")
    assert meta["threshold"] == pytest.approx(verified["threshold"]) and "verify.json" in meta["threshold_rule"]
    assert meta["fingerprint"] == read_gallery(base / "g.pt")["model"]["fingerprint"]
    # the gallery the checkpoint enrolled, identified through the ONNX file: the same answers
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(tmp_path / "cache"))
    facecls(["identify", f"model={summary['file']}", f"gallery={base / 'g.pt'}", f"input={people}",
             "far=0.1", f"out={tmp_path / 'id'}", "trainer.device=cpu"])
    want = identify(open_set, "id-ckpt", "far=0.1")
    got = {r["file"]: r for r in read_csv(tmp_path / "id" / "identify.csv")}
    assert {f: r["decision"] for f, r in got.items()} == {f: r["decision"] for f, r in want.items()}
    assert all(float(got[f]["similarity"]) == pytest.approx(float(want[f]["similarity"]), abs=1e-4) for f in want)
    facecls(["verify", f"model={summary['file']}", f"pairs={base / 'pairs.txt'}", f"data.root={people}",
             f"out={tmp_path / 'v'}", "trainer.device=cpu"])
    again = read_json(tmp_path / "v" / "verify.json")
    assert again["model_fingerprint"] == verified["model_fingerprint"]
    assert again["accuracy_mean"] == verified["accuracy_mean"] and again["roc_auc"] == verified["roc_auc"]


def test_the_threshold_comes_only_from_a_verify_json_of_the_same_weights(open_set):
    from facecls.inference.model_info import verification_threshold

    _, _, base = open_set
    run_dir, verified = base / "run", read_json(base / "run" / "verify.json")
    fingerprint = verified["model_fingerprint"]
    assert verification_threshold(run_dir, fingerprint, None)[0] == pytest.approx(verified["threshold"])
    threshold, rule = verification_threshold(run_dir, fingerprint, 1e-3)  # 4 different pairs cannot measure it
    assert threshold == pytest.approx(verified["threshold"]) and "not measured" in rule
    assert verification_threshold(run_dir, "0" * 16, None) == (None, None)  # another checkpoint of the run
    with pytest.raises(UserError):
        verification_threshold(run_dir, fingerprint, 2.0)
