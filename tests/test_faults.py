"""Faults a user, a folder or a disk brings (issue 21): each ends in one line naming the cause and
the fix with a non-zero exit — or simply works — and leaves what was written before intact.

Full and read-only disks are small tmpfs mounts (root only: the tests skip where `mount` is
not permitted)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facecls.direct_write as direct_write
from facecls.config.args import expand_resume_args, quote_plain_values
from facecls.config.compose import config_dir
from facecls.config.overrides import check_overrides, run_dir_target
from facecls.config.validate import validate_train_config
from facecls.data.dataset import build_data
from facecls.data.decode import decode_images, load_image
from facecls.data.faces import FaceCrop
from facecls.data.preprocess import Preprocess
from facecls.data.sources import image_folder
from facecls.errors import UserError
from facecls.inference.device import amp_flag, precision_name
from facecls.inference.metrics import calibration
from facecls.inference.scoring import draw_reliability
from facecls.io import DiskFull, atomic_torch_save, atomic_write_text, check_writable_dir, lock_dir
from facecls.models import build_model
from facecls.models.memory import check_training_memory
from facecls.plots import plot_confusion, plt
from facecls.sweeps.summary import write_summary
from facecls.training.loggers.mlflow import StoreNotWritable, check_store

from helpers import FAST, cli_env, read_json, run_cli, train_runs


# ---------------------------------------------------------------- small disks (tmpfs)
def _mount(folder: Path, size: str, read_only: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0777" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode(errors='replace').strip()[:80]})")


@pytest.fixture
def disk(tmp_path):
    """disk(size, read_only=False, fill=None) → a fresh tmpfs folder; ``fill(folder)`` runs before
    a read-only remount. Unmounted at the end."""
    mounted = []

    def make(size: str = "1m", read_only: bool = False, fill=None) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        _mount(folder, size)
        mounted.append(folder)
        if fill is not None:
            fill(folder)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The process failed with one `facecls: error:` line holding ``words``, and no traceback."""
    assert proc.returncode not in (0, 1), (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("facecls: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_faces):
    """One tiny trained run (its best.pt) and the CLI env, for the commands that read a run."""
    base = tmp_path_factory.mktemp("trained")
    ckpts, env = train_runs(base, tiny_faces, ["convnet"])
    return ckpts["convnet"], env


# ---------------------------------------------------------------- 1. unwritable output places
def test_check_writable_dir_names_the_cause(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder — pass out="):
        check_writable_dir(blocker / "sub", fix="pass out=DIR")
    assert check_writable_dir(tmp_path / "new" / "dir").is_dir()
    with pytest.raises(UserError, match="needs about"):
        check_writable_dir(tmp_path, need_bytes=2**62)


def _under_a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    return blocker / "sub"


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_commands_check_their_output_place_first(command, trained, tmp_path):
    ckpt, env = trained
    extra = [f"input={ckpt.parent.parent}"] if command == "predict" else []
    proc = run_cli(command, f"ckpt={ckpt}", *extra, f"out={_under_a_file(tmp_path)}", cwd=tmp_path, env=env,
                   check=False)
    _one_line_error(proc, "is a file", "out=")


@pytest.mark.slow
@pytest.mark.parametrize("command", [["robustness", "variation=[rotation]"], ["visualize", "weights"]])
def test_every_command_that_reads_a_run_checks_its_output_place(command, trained, tmp_path):
    ckpt, env = trained
    proc = run_cli(command[0], *command[1:], f"ckpt={ckpt}", f"out={_under_a_file(tmp_path)}", cwd=tmp_path,
                   env=env, check=False)
    _one_line_error(proc, "is a file", "out=")


def test_summarize_and_make_data_check_their_output_place(trained, tmp_path):
    ckpt, env = trained
    blocker = _under_a_file(tmp_path)
    proc = run_cli("summarize", str(ckpt.parent.parent), f"out={blocker}/sub", cwd=tmp_path, env=env, check=False)
    _one_line_error(proc, "is a file", "out=")
    proc = run_cli("make-data", "synthetic", f"out={blocker}/sub", cwd=tmp_path, env=env, check=False)
    _one_line_error(proc, "is a file", "out=")


def test_read_only_disks_are_one_line_before_the_work(trained, tmp_path, disk):
    ckpt, env = trained
    run_dir = ckpt.parent.parent
    read_only = disk("8m", read_only=True, fill=lambda d: shutil.copytree(run_dir, d / "run"))
    ro_run = read_only / "run"
    # eval of a run on a read-only disk: refused before scoring (it used to fail on a temp file after it)
    _one_line_error(run_cli("eval", f"ckpt={ro_run}/checkpoints/best.pt", cwd=tmp_path, env=env, check=False),
                    "read-only", "out=")
    _one_line_error(run_cli("summarize", str(ro_run), cwd=tmp_path, env=env, check=False), "read-only", "out=")
    _one_line_error(run_cli("train", f"paths.output_dir={read_only}/outputs", *FAST, cwd=tmp_path, env=env,
                            check=False), "not writable", "paths.output_dir")
    # … and out= elsewhere works
    run_cli("summarize", str(ro_run), f"out={tmp_path / 'summary'}", cwd=tmp_path, env=env)
    assert (tmp_path / "summary" / "summary.csv").is_file()


# ---------------------------------------------------------------- 2. full disks
@pytest.mark.parametrize("direct", [False, True], ids=["page-cache", "o-direct"])
def test_torch_save_on_a_full_disk_keeps_the_previous_file(disk, direct, monkeypatch):
    if direct:  # a checkpoint-sized write, past the page cache (tmpfs takes O_DIRECT since Linux 6.6)
        monkeypatch.setattr(direct_write, "MIN_BYTES", 1)
        monkeypatch.setattr(direct_write, "CHUNK", 64 * 1024)
    small = disk("256k")
    atomic_torch_save({"w": torch.zeros(10)}, small / "last.pt", direct=direct)
    with pytest.raises(DiskFull) as caught:
        atomic_torch_save({"w": torch.zeros(200_000)}, small / "last.pt", direct=direct)  # 800 KB onto 256 KB
    message = str(caught.value)
    assert "needed about 781.2 KB" in message and "free" in message and "\n" not in message
    assert isinstance(caught.value, OSError)  # a cache's `except OSError` goes on without the file
    assert torch.load(small / "last.pt")["w"].shape == (10,)  # intact
    assert sorted(p.name for p in small.iterdir()) == ["last.pt"]  # no temp file left
    with pytest.raises(DiskFull, match="needed more than"):
        atomic_write_text(small / "big.txt", "x" * 400_000)


@pytest.mark.slow  # a whole CLI run; the in-process test above covers the writer
def test_training_onto_a_full_disk_is_one_line(tiny_faces, tmp_path, disk):
    small = disk("600k")  # room for the log, not for the ConvNet's checkpoints (~1.1 MB each)
    proc = run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", *FAST, f"hydra.run.dir={small}/run",
                   cwd=tmp_path, env=cli_env(tmp_path / "cache"), check=False)
    _one_line_error(proc, "free", "needs about")


def test_decode_cache_on_a_full_disk_goes_on_without_it(tiny_faces, disk, caplog):
    small = disk("64k")
    files = image_folder(tiny_faces).files
    images, keep, skipped = decode_images(tiny_faces, files, Preprocess(size=64), small, progress=False)
    assert len(images) == len(files) and not skipped
    assert "Could not write the tensor cache" in caplog.text and "no space left" in caplog.text


# ---------------------------------------------------------------- 5. names
def test_figure_labels_are_literal_text(tmp_path):
    path = plot_confusion(np.eye(3, dtype=int), ["$\\foo$", "a_b^c", "bad\udcff"], tmp_path / "cm.png")
    assert path.stat().st_size > 0


def test_any_name_survives_training(tiny_faces, tmp_path):
    root = tmp_path / "faces"
    shutil.copytree(tiny_faces, root)
    first = sorted(root.iterdir())[0]
    first.rename(root / "$\\foo$")  # mathtext for matplotlib: crashed the confusion matrix after training
    (root / "$\\foo$").joinpath(os.fsdecode(b"bad\xff\xfe.jpg")).write_bytes(b"not an image")
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "facecls", "train", "data=imagefolder", f"data.root={root}", *FAST,
                           f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=cli_env(tmp_path / "cache"),
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    proc.stdout.decode("utf-8")  # strict: tools reading facecls's output as UTF-8 never break
    assert b"Logging error" not in proc.stderr
    assert (run_dir / "confusion_matrix.png").is_file()
    assert "$\\foo$" in read_json(run_dir / "metrics.json")["classes"]
    assert "bad\\udcff\\udcfe.jpg" in (run_dir / "train.log").read_text(encoding="utf-8")


# ---------------------------------------------------------------- 6. closed stdout
@pytest.mark.parametrize("args", [["models"], ["train", "--help"]])
def test_closed_stdout_ends_quietly(args, tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before facecls writes a byte (`| head -1` that already ended)
    try:
        proc = subprocess.run([sys.executable, "-m", "facecls", *args], stdout=write_end, stderr=subprocess.PIPE,
                              cwd=tmp_path, env=cli_env(tmp_path / "cache"), timeout=120, text=True)
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------- 10. argument order
@pytest.mark.parametrize("order", ["run_dir_last", "output_dir_last"])
def test_run_dir_check_does_not_depend_on_argument_order(order, tmp_path):
    run_dir, blocked = f"hydra.run.dir={tmp_path / 'run'}", f"paths.output_dir={tmp_path / 'file' / 'x'}"
    args = [blocked, run_dir] if order == "run_dir_last" else [run_dir, blocked]
    assert run_dir_target(args) == str(tmp_path / "run")
    assert run_dir_target([blocked, "-m"]) == str(tmp_path / "file" / "x")
    assert run_dir_target(["-m", run_dir]) == "outputs"  # a sweep writes under hydra.sweep.dir


# ---------------------------------------------------------------- 11. paths with spaces, non-ASCII
def test_resume_from_a_folder_with_spaces_and_non_ascii(tiny_faces, tmp_path):
    run_dir = tmp_path / "my runs ü 李" / "run 1"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(json.dumps(["data=imagefolder", f"data.root={tiny_faces}"]))
    for typed in (str(run_dir), f"'{run_dir}'", f"{run_dir}/checkpoints/last.pt"):
        args = expand_resume_args(quote_plain_values([f"resume={typed}", "trainer.max_epochs=3"]))
        check_overrides(config_dir(), "train", args)  # parses (it used to be re-emitted unquoted)
        assert f"hydra.run.dir='{run_dir}'" in args and "trainer.max_epochs=3" in args
    assert quote_plain_values(["data.root=/my photos/Zoë"]) == ["data.root='/my photos/Zoë'"]


def test_unparsable_override_says_to_quote(tmp_path):
    proc = run_cli("train", "data.root=[Zoë]", cwd=tmp_path, env=cli_env(tmp_path / "cache"), check=False)
    _one_line_error(proc, "quote")


# ---------------------------------------------------------------- 12. one process per run dir
def test_second_train_into_a_run_dir_names_the_first(tmp_path):
    run_dir = tmp_path / "run"
    lock_dir(run_dir, fix="choose another run dir")  # this test process plays the first `facecls train`
    proc = run_cli("train", *FAST, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=cli_env(tmp_path / "cache"),
                   check=False)
    _one_line_error(proc, f"PID {os.getpid()}", "hydra.run.dir")
    assert not (run_dir / ".hydra").exists() and not (run_dir / "train.log").exists()


# ---------------------------------------------------------------- 3. broken files inside a sweep dir
def test_broken_files_in_a_sweep_are_listed_unreadable(tmp_path):
    sweep = tmp_path / "sweep"
    good = {"best_epoch": 2, "best_val_acc": 0.7, "test_acc": 0.8, "epochs_run": 2, "stop_reason": "max_epochs"}
    # empty, not UTF-8, a list, truncated (it used to show as "running"), overrides that are not YAML
    broken = {"0": b"", "1": b"\xff\xfe{not utf-8", "2": b"[1, 2, 3]", "3": b'{"best_val_acc": 0.', "4": None}
    for job, metrics in {**broken, "5": json.dumps(good).encode()}.items():
        (sweep / job / ".hydra").mkdir(parents=True)
        overrides = "- seed=1\n- reg: [unclosed\n" if job == "4" else f"- seed={job}\n"
        (sweep / job / ".hydra" / "overrides.yaml").write_text(overrides)
        (sweep / job / "history.csv").write_bytes(b"epoch,val_acc\n1,0.5\n\xff\xfe\x00\n")
        (sweep / job / "metrics.json").write_bytes(metrics if metrics is not None else json.dumps(good).encode())
    summary, text = write_summary([str(sweep)], plots=False)
    status = {r.name: r.status for r in summary.runs}
    assert status == {"0": "unreadable", "1": "unreadable", "2": "unreadable", "3": "unreadable",
                      "4": "unreadable", "5": "max_epochs"}, status
    assert "JSON list, not an object" in text and "not readable YAML" in text
    assert (sweep / "summary.csv").is_file()


# ---------------------------------------------------------------- 7. data.faces=detect
@pytest.mark.parametrize("typed, mode", [("detect", "detect"), ("none", "none"), ("true", "detect")])
def test_faces_short_form_is_accepted(compose_train, typed, mode):
    cfg = compose_train(f"data.faces={typed}")
    validate_train_config(cfg)
    assert FaceCrop.from_config(cfg.data.faces) == FaceCrop(mode=mode)


def test_faces_of_another_type_is_one_line(compose_train):
    with pytest.raises(UserError, match="data.faces=3 is not a face setting — use data.faces=detect"):
        validate_train_config(compose_train("data.faces=3"))
    with pytest.raises(UserError, match="not a face setting"):
        FaceCrop.from_config(3)


# ---------------------------------------------------------------- 14. the right cause
def test_no_faces_found_is_not_called_undecodable(compose_train, tmp_path):
    pytest.importorskip("cv2")
    root = tmp_path / "noise"
    for person in ("a", "b"):
        (root / person).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((48, 48, 3), 40 * i, dtype=np.uint8)).save(root / person / f"{i}.png")
    cfg = compose_train(f"data.root={root}", "data.faces=detect")
    validate_train_config(cfg)
    with pytest.raises(UserError, match=r"no faces found in any of the 6 image\(s\) tried") as caught:
        build_data(cfg.data, Preprocess(size=16), None, progress=False)
    assert "decode" not in str(caught.value) and "data.faces.on_miss=keep" in str(caught.value)


# ---------------------------------------------------------------- 13. huge images
MEASURE = """
import resource, sys
from PIL import Image
from facecls.data.decode import load_image
from facecls.data.preprocess import Preprocess
Image.new("RGB", (64, 64)).save(sys.argv[2]); load_image(sys.argv[2], Preprocess(size=40))  # imports, warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert load_image(sys.argv[1], Preprocess(size=40)).shape == (3, 40, 40)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_huge_png_is_decoded_reduced(tmp_path):
    side = 6000  # a PNG: no JPEG draft mode; its pixels are decoded whole once
    Image.new("RGB", (side, side), (120, 80, 60)).save(tmp_path / "big.png")
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "big.png"), str(tmp_path / "small.png")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown = int(proc.stdout.split()[-1])
    assert grown < 2 * side * side * 3, f"decoding took {grown / 2**20:.0f} MB for a {side}² thumbnail source"


def test_reduced_decode_keeps_the_exif_orientation(tmp_path):
    image = Image.new("RGB", (2000, 1000), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 1000, 1000))  # left half white
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: a viewer rotates it 90° clockwise
    image.save(tmp_path / "side.png", exif=exif)  # PNG: no draft mode, so Image.reduce shrinks it
    pixels = load_image(tmp_path / "side.png", Preprocess(size=40))
    assert pixels.shape == (3, 40, 40)
    # upright: the white half is now on top (rotated clockwise), so the top rows are bright
    assert pixels[:, :10].float().mean() > 200 and pixels[:, -10:].float().mean() < 50


# ---------------------------------------------------------------- 8. nothing outside data.root
def test_symlinks_never_lead_outside_the_data_root(tmp_path):
    root = tmp_path / "root"
    for person in ("ada", "ben"):
        (root / person).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / person / "1.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    (root / "dotdot").symlink_to("..")  # a class folder that is the root's parent
    (root / "ada" / "linked_out.png").symlink_to(tmp_path / "outside.png")
    (root / "ben" / "linked_in.png").symlink_to(root / "ada" / "1.png")  # stays inside: read
    (root / "ben" / "sub").symlink_to(tmp_path)  # a folder link inside a class: not followed
    images = image_folder(root)
    assert images.classes == ["ada", "ben"]
    assert images.files == ["ada/1.png", "ben/1.png", "ben/linked_in.png"]
    assert sorted(images.ignored) == ["ada/linked_out.png", "ben/sub", "dotdot"]


# ---------------------------------------------------------------- 16. the reliability diagram
def test_reliability_diagram_draws_accuracy_bars_and_the_gap_to_confidence(tmp_path):
    # 10 images at confidence 0.95 of which 5 right (over-confident), 4 at 0.25 all right (under-confident)
    confidence = torch.tensor([0.95] * 10 + [0.25] * 4, dtype=torch.float64)
    correct = torch.tensor([True] * 5 + [False] * 5 + [True] * 4)
    bins = calibration(confidence, correct, n_bins=10)
    fig, ax = plt.subplots()
    draw_reliability(ax, bins)
    bars = {c.get_label(): [(round(p.get_x(), 3), round(p.get_y(), 3), round(p.get_height(), 3)) for p in c]
            for c in ax.containers}
    plt.close(fig)
    assert bars["accuracy in bin"] == [(0.2, 0.0, 1.0), (0.9, 0.0, 0.5)]
    # the gap spans accuracy → mean confidence in each bin: above the bar when over-confident
    assert bars["gap to the bin's mean confidence"] == [(0.2, 0.25, 0.75), (0.9, 0.5, 0.45)]
    assert not ax.collections  # no dots drawn at a bin's accuracy under a "mean confidence" label


# ---------------------------------------------------------------- 15. the precision a run used
def test_precision_is_recorded_with_the_run(trained, tmp_path):
    ckpt, _ = trained
    run_dir = ckpt.parent.parent
    cpu = torch.device("cpu")
    expected = precision_name(cpu, amp_flag("auto", cpu))  # what trainer.amp=auto gives on this machine
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["precision"] == expected and metrics["device_name"]
    assert f"in {expected}" in (run_dir / "train.log").read_text()
    summary, text = write_summary([str(run_dir)], out=tmp_path, plots=False)
    with open(tmp_path / "summary.csv", newline="") as f:
        assert next(csv.DictReader(f))["precision"] == expected
    assert "| precision |" in (tmp_path / "summary.md").read_text()  # the runs table


# ---------------------------------------------------------------- 4. config values and memory
@pytest.mark.parametrize("override, words", [("seed=abc", "seed='abc' is not a whole number"),
                                             ("trainer.num_threads=-3", "trainer.num_threads=-3 is invalid"),
                                             ("trainer.num_threads=two", "trainer.num_threads='two' is invalid")])
def test_bad_config_values_are_one_line(compose_train, override, words):
    with pytest.raises(UserError, match=words):
        validate_train_config(compose_train(override))


def test_memory_of_a_config_is_estimated_before_allocating(compose_train):
    cpu = torch.device("cpu")
    cfg = compose_train("model.input_size=3000")
    with pytest.raises(UserError, match=r"needs about [\d.]+ GB to train .* lower model.input_size"):
        check_training_memory(cfg.model, 2, 64, 3000, cpu)
    small = compose_train()
    need = check_training_memory(small.model, 3, 16, 16, cpu)
    model = build_model(small.model, num_classes=3)
    assert need >= 4 * 4 * sum(p.numel() for p in model.parameters())  # weights, grads, 2 Adam moments


# ---------------------------------------------------------------- 9. a read-only MLflow store
def test_read_only_mlflow_store_is_refused_before_mlflow(tmp_path, disk):
    store = disk("1m", read_only=True)
    for uri in (f"sqlite:///{store}/mlflow.db", f"file:{store}/mlruns", str(store / "mlruns")):
        with pytest.raises(StoreNotWritable, match="not writable .*read-only file system"):
            check_store(uri)
    check_store(f"sqlite:///{tmp_path}/new/mlflow.db")  # writable: nothing to say
    check_store("http://localhost:5000")  # a server: its own timeouts apply


@pytest.mark.slow  # the whole run with mlflow imported (~45 s here)
def test_read_only_mlflow_store_is_one_warning(tiny_faces, tmp_path, disk):
    pytest.importorskip("mlflow")
    store = disk("1m", read_only=True)
    run_dir = tmp_path / "run"
    proc = run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", *FAST, "logger=mlflow",
                   f"logger.mlflow.tracking_uri=sqlite:///{store}/mlflow.db", f"hydra.run.dir={run_dir}",
                   cwd=tmp_path, env=cli_env(tmp_path / "cache"))
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines() if "mlflow" in line.lower() and
                ("warn" in line.lower() or "retry" in line.lower() or "failed" in line.lower())]
    assert len(warnings) == 1 and "not writable" in warnings[0], warnings
    assert read_json(run_dir / "metrics.json")["logger_failures"]["mlflow"].startswith("start: StoreNotWritable")
