"""`facecls serve` as a user runs it: uvicorn in a subprocess on a free loopback port, a real HTTP
client (httpx), a tiny ConvNet trained in-process and exported to ONNX. Answers equal `facecls
predict`; every bad input gets a 4xx JSON error and the next request is answered; concurrent
requests share forward passes; uploads never reach the disk or the log; SIGTERM answers the
request in flight and exits 0; the page works in headless Chromium (skipped without it)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import cli_env, compose_tiny_train, read_csv

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
pytestmark = pytest.mark.usefixtures("no_downloads")

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or \
    "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`facecls serve` in a subprocess; its output goes to a file the tests read."""

    def __init__(self, model: Path, base: Path, *overrides: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / f"serve-{self.port}.log"
        self.tmp = base / f"tmp-{self.port}"  # the server's TMPDIR: uploads must never appear there
        self.tmp.mkdir()
        env = dict(cli_env(base / "cache"), TMPDIR=str(self.tmp))
        self.proc = subprocess.Popen([sys.executable, "-m", "facecls", "serve", f"model={model}",
                                      f"port={self.port}", *overrides], cwd=base, env=env,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"facecls serve exited:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError(f"facecls serve did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def model(tiny_faces, tmp_path_factory):
    """(best.pt, model.onnx, base dir) of a one-epoch ConvNet on tiny_faces."""
    from facecls.config.compose import compose
    from facecls.export.run import run_export
    from facecls.training.run import run_training

    base = tmp_path_factory.mktemp("serve")
    run_training(compose_tiny_train(tiny_faces, base / "cache", "trainer.max_epochs=1"), base / "run")
    ckpt = base / "run" / "checkpoints" / "best.pt"
    onnx = run_export(compose("export", [f"ckpt={ckpt}", f"cache_dir={base / 'cache'}"]))["file"]
    return ckpt, Path(onnx), base


@pytest.fixture(scope="module")
def server(model):
    srv = Server(model[1], model[2], "serve.max_upload_mb=3", "serve.max_wait_ms=100", "serve.threads=1")
    yield srv
    srv.stop()


def jpeg(size: int = 256, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def post(server, files, path="/predict", **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, files=files, timeout=120, **kwargs)


def test_predict_answers_equal_facecls_predict(server, model, tiny_faces, tmp_path):
    from facecls.config.compose import compose
    from facecls.inspect.predict import run_predict

    names = [sorted(folder.iterdir())[i].relative_to(tiny_faces).as_posix()
             for i, folder in enumerate(sorted(p for p in tiny_faces.iterdir() if p.is_dir()))]
    assert len(names) == 3
    answer = post(server, [("files", (n, (tiny_faces / n).read_bytes(), "image/jpeg")) for n in names]).json()
    run_predict(compose("predict", [f"model_file={model[1]}", f"input={tiny_faces}", f"out={tmp_path}",
                                    "progress=false", "top_k=3", "trainer.device=cpu"]))
    expected = {row["file"]: row for row in read_csv(tmp_path / "predictions.csv")}
    assert [r["file"] for r in answer["results"]] == names
    for result in answer["results"]:
        row = expected[result["file"]]
        got = result["predictions"]
        assert [p["class"] for p in got[:3]] == [row["top1"], row["top2"], row["top3"]]
        assert got[0]["probability"] == pytest.approx(float(row["p1"]), abs=2e-6)
        assert result["box"] is None
    assert answer["engine"] == "onnxruntime" and answer["time_ms"]["total"] > 0


def test_health_metadata_docs_and_the_page(server, model):
    from facecls.inference.checkpoint import load_checkpoint

    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    meta = httpx.get(server.url + "/metadata").json()
    assert meta["classes"] == load_checkpoint(model[0]).classes and meta["input_size"] == 16
    assert meta["output"] == "logits" and "test_acc" in meta["extra"]["metrics"]
    assert "/predict" in httpx.get(server.url + "/openapi.json").json()["paths"]
    assert httpx.get(server.url + "/docs").status_code == 200
    assert 'id="drop"' in httpx.get(server.url + "/").text


def bomb() -> bytes:
    """A 48-megapixel PNG of a few kilobytes: decoded, it would take 144 MB."""
    buffer = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD = {  # name → (request kwargs, path, expected status, words of the error)
    "not an image": (lambda: {"files": [("files", ("notes.txt", b"hello, not a photo", "text/plain"))]},
                     "/predict", 415, "not an image"),
    "empty file": (lambda: {"files": [("files", ("a.jpg", b"", "image/jpeg"))]}, "/predict", 422, "empty"),
    "truncated": (lambda: {"files": [("files", ("cut.jpg", jpeg()[:int(len(jpeg()) * 0.6)], "image/jpeg"))]},
                  "/predict", 422, "truncated"),
    "too large": (lambda: {"files": [("files", ("big.jpg", b"\xff" * (4 * 2**20), "image/jpeg"))]},
                  "/predict", 413, "max_upload_mb"),
    "bomb": (lambda: {"files": [("files", ("bomb.png", bomb(), "image/png"))]}, "/predict", 413, "bomb"),
    "missing field": (lambda: {"files": {"note": (None, "a form field, no file")}}, "/predict", 422, "no image"),
    "not multipart": (lambda: {"json": {"image": "x"}}, "/predict", 415, "multipart"),
    "wrong model kind": (lambda: {"files": [("files", ("a.jpg", jpeg(32), "image/jpeg"))]}, "/verify", 409,
                         "embedding model"),
    "bad top_k": (lambda: {"files": [("files", ("a.jpg", jpeg(32), "image/jpeg"))], "params": {"top_k": 0}},
                  "/predict", 422, "top_k"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_is_a_4xx_naming_the_cause_and_the_next_one_is_answered(case, server):
    make, path, status, words = BAD[case]
    response = httpx.post(server.url + path, timeout=120, **make())
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    good = post(server, [("files", ("ok.jpg", jpeg(32), "image/jpeg"))])
    assert good.status_code == 200 and len(good.json()["results"]) == 1
    assert server.proc.poll() is None


def test_concurrent_requests_share_forward_passes(server):
    images = [jpeg(32, seed) for seed in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda data: post(server, [("files", ("x.jpg", data, "image/jpeg"))]), images))
    assert all(a.status_code == 200 for a in answers)
    assert max(a.json()["batch_images"] for a in answers) > 1


def test_uploads_never_reach_the_disk_or_the_log(server):
    big = Image.fromarray(np.random.default_rng(1).integers(0, 256, (900, 900, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")  # ~2.4 MB: Starlette would spool it to a temporary file
    assert 2**20 < len(buffer.getvalue()) < 3 * 2**20
    before = {p: p.stat().st_size for p in server.tmp.rglob("*")}  # (a library's own start-up files)
    answer = post(server, [("files", ("private_face_of_someone.png", buffer.getvalue(), "image/png"))])
    assert answer.status_code == 200
    assert {p: p.stat().st_size for p in server.tmp.rglob("*")} == before
    log = server.log.read_text()
    assert "POST /predict 200" in log and "private_face_of_someone" not in log


def test_sigterm_answers_the_request_in_flight_then_exits_0(model):
    """A server of the checkpoint itself (PyTorch) whose batcher waits 2 s: SIGTERM arrives while
    a request waits in it."""
    srv = Server(model[0], model[2], "serve.max_wait_ms=2000", "serve.threads=1")
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            assert client.get("/health").json()["engine"] == "pytorch"
            answer = {}
            request = threading.Thread(target=lambda: answer.update(
                r=client.post("/predict", files=[("files", ("a.jpg", jpeg(32), "image/jpeg"))])))
            request.start()
            time.sleep(0.8)
            srv.proc.send_signal(signal.SIGTERM)
            request.join(timeout=120)
        assert answer["r"].status_code == 200 and answer["r"].json()["results"]
        assert srv.proc.wait(timeout=60) == 0
    finally:
        srv.stop()


def test_ctrl_c_twice_ends_quietly_with_one_line(model):
    """Ctrl-C, then Ctrl-C again while a request waits (uvicorn's force quit): no CancelledError
    traceback, one "stopped" line, exit 0."""
    srv = Server(model[1], model[2], "serve.max_wait_ms=3000", "serve.threads=1")
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            def send() -> None:  # cut off by the force quit: its answer does not matter here
                with contextlib.suppress(httpx.HTTPError):
                    client.post("/predict", files=[("files", ("a.jpg", jpeg(32), "image/jpeg"))])

            request = threading.Thread(target=send)
            request.start()
            time.sleep(0.5)
            srv.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            srv.proc.send_signal(signal.SIGINT)
            assert srv.proc.wait(timeout=60) == 0
            request.join(timeout=60)
        log = srv.log.read_text()
        assert log.count("stopped (SIGINT)") == 1 and "CancelledError" not in log and "Traceback" not in log, log
    finally:
        srv.stop()


@pytest.mark.slow  # trains an open-set model on its own 10-person data and starts a second server
def test_an_embedding_model_exports_and_verifies(tmp_path):
    from facecls.config.compose import compose
    from facecls.data.synthetic import write_dataset
    from facecls.export.run import run_export
    from facecls.training.run import run_training

    root = tmp_path / "people"
    write_dataset(root, num_classes=10, images_per_class=10, image_size=32, seed=0, progress=False)
    run_training(compose_tiny_train(root, tmp_path / "cache", "model.embedding_dim=8", "loss=arcface",
                                    "trainer.max_epochs=1"), tmp_path / "run")
    summary = run_export(compose("export", [f"ckpt={tmp_path / 'run' / 'checkpoints' / 'best.pt'}",
                                            f"cache_dir={tmp_path / 'cache'}"]))
    assert summary["parity"]["ok"] and summary["metadata"]["output"] == "embedding"
    assert summary["metadata"]["embedding_dim"] == 8
    srv = Server(Path(summary["file"]), tmp_path, "serve.threads=1")
    try:
        photos = sorted((root / sorted(p.name for p in root.iterdir())[0]).iterdir())
        one = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:2]]
        same = post(srv, [one[0], one[0]], "/verify", params={"threshold": 0.5}).json()
        assert same["similarity"] == pytest.approx(1.0, abs=1e-5) and same["same"] is True
        pair = post(srv, one, "/verify").json()
        assert -1 <= pair["similarity"] <= 1 and pair["threshold"] is None and pair["same"] is None
        assert post(srv, one[:1], "/verify").status_code == 422  # one image is not a pair
        assert post(srv, one, "/predict").status_code == 409     # an embedding model names no classes
        assert httpx.get(srv.url + "/metadata").json()["embedding_dim"] == 8
    finally:
        srv.stop()


def headless_chrome(webdriver, tmp_path: Path):
    """A real headless Chromium (the page is tested as a user's browser runs it)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))


NEEDS_CHROMIUM = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="no chromium + chromedriver (Debian: apt-get install chromium chromium-driver)")


@NEEDS_CHROMIUM
def test_the_page_uploads_a_photo_and_shows_the_predicted_name(server, tiny_faces, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folders = sorted(p for p in tiny_faces.iterdir() if p.is_dir())
    photo = sorted(folders[1].iterdir())[2]
    expected = post(server, [("files", (photo.name, photo.read_bytes(), "image/jpeg"))]).json()
    driver = headless_chrome(webdriver, tmp_path)
    try:
        driver.get(server.url + "/")
        upload = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false", upload)
        upload.send_keys(str(photo))
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "prediction").text not in ("", "…"))
        assert driver.find_element(By.ID, "prediction").text == expected["results"][0]["predictions"][0]["class"]
        assert driver.find_element(By.ID, "error").text == ""
        crop = driver.find_element(By.ID, "crop")
        assert crop.is_displayed() and crop.get_attribute("src").startswith("data:image/png;base64,")
        assert folders[0].name in driver.find_element(By.ID, "top").text  # every class is listed with its share
    finally:
        driver.quit()
