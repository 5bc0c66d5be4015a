"""Experiment trackers (logger=…): real TensorBoard event files and a real SQLite MLflow store,
read back with the trackers' own readers (EventAccumulator, MlflowClient) and, in the slow
test, over the HTTP APIs of a real `mlflow server` and `tensorboard`."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import TINY, cli_env, read_history, read_json, run_cli

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
# mlflow 3.17's SQLAlchemy store trips SQLAlchemy 2.1's deprecation of `noload` (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")

BOTH = "logger=[tensorboard,mlflow]"
# history.csv column → TensorBoard tag (facecls.training.loggers.tensorboard.EPOCH_TAGS)
TB_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "acc/train", "val_acc": "acc/val",
           "lr": "lr"}


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event_accumulator(tb_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def mlflow_client(base: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{base / 'outputs' / 'mlflow.db'}")


def only_mlflow_run(client):
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_faces):
    """Two 2-epoch `facecls train logger=[tensorboard,mlflow]` runs started side by side (two
    cores): base/run with the default MLflow store base/outputs/mlflow.db (paths.output_dir is
    relative to where facecls starts), and base/unreachable whose tracking server is a closed
    loopback port. Returns (base, {name: (run dir, returncode, output)})."""
    base = tmp_path_factory.mktemp("tracked")
    env = cli_env(base / "cache")
    common = [sys.executable, "-m", "facecls", "train", "data=imagefolder", f"data.root={tiny_faces}", *TINY, BOTH]
    args = {"run": ["optim.lr=0.002", "logger.mlflow.log_checkpoint=true"],
            "unreachable": [f"logger.mlflow.tracking_uri=http://127.0.0.1:{free_port()}",
                            "logger.mlflow.http_retries=0"]}
    jobs = {name: subprocess.Popen([*common, *extra, f"hydra.run.dir={base / name}"], cwd=base, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, extra in args.items()}
    done = {}
    for name, job in jobs.items():
        output, _ = job.communicate(timeout=300)
        done[name] = (base / name, job.returncode, output)
    assert done["run"][1] == 0, done["run"][2][-3000:]
    return base, done


def test_default_is_csv_only_and_a_list_composes(compose_train):
    from facecls.training.loggers import build_loggers

    assert not build_loggers(compose_train().get("logger"))  # logger=csv: no tracker at all
    cfg = compose_train(BOTH, "logger.mlflow.tracking_uri=http://example.invalid:5000")
    assert [k for k in cfg.logger] == ["tensorboard", "mlflow"]
    assert cfg.logger.mlflow._target_ == "facecls.training.loggers.mlflow.MlflowLogger"
    assert build_loggers(cfg.logger).names == ["tensorboard", "mlflow"]


def test_tensorboard_scalars_equal_history_csv(tracked):
    run_dir = tracked[1]["run"][0]
    history, metrics = read_history(run_dir), read_json(run_dir / "metrics.json")
    acc = event_accumulator(run_dir / "tb")
    for column, tag in TB_TAGS.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [int(r["epoch"]) for r in history], tag
        # event files store float32
        assert [e.value for e in events] == pytest.approx([float(r[column]) for r in history], rel=1e-6), tag
    assert [e.step for e in acc.Scalars("images_per_second")] == [1, 2]
    assert acc.Scalars("test/acc")[-1].value == pytest.approx(metrics["test_acc"], rel=1e-6)
    assert acc.Scalars("test/loss")[-1].value == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert {"figures/curves", "figures/confusion_matrix"} <= set(acc.Tags()["images"])


def test_tensorboard_hparams_hold_the_overrides_and_final_metrics(tracked):
    from tensorboard.plugins.hparams import metadata

    run_dir = tracked[1]["run"][0]
    content = event_accumulator(run_dir / "tb").PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.002)
    assert start.hparams["trainer.max_epochs"].number_value == 2
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert "hparam/test_acc" in {m.name.tag for m in experiment.metric_infos}


def test_inspect_figures_go_into_the_runs_tensorboard(tracked, tmp_path, monkeypatch):
    """eval, robustness and visualize add the PNGs they write to the run's event files (a new
    file in <run>/tb): the Images tab shows them, pixel for pixel; a run without tb is left alone.
    The commands' mains run in-process (three Python starts less; the CLI runs each of them in
    test_cli_train, test_robustness and test_visualize)."""
    import io
    import shutil

    import numpy as np
    from PIL import Image

    from facecls.commands.eval import main as eval_main
    from facecls.commands.robustness import main as robustness_main
    from facecls.commands.visualize import main as visualize_main
    from facecls.config.compose import compose

    base, runs = tracked
    run_dir = Path(shutil.copytree(runs["run"][0], tmp_path / "run"))  # the other tests keep theirs
    ckpt = run_dir / "checkpoints" / "best.pt"
    monkeypatch.setenv("FACECLS_CACHE_DIR", str(base / "cache"))
    trained = set(event_accumulator(run_dir / "tb").Tags()["images"])
    eval_main(compose("eval", [f"ckpt={ckpt}"]))
    robustness_main(compose("robustness", [f"ckpt={ckpt}", "variation=[identity]"]))
    visualize_main(compose("visualize", ["kind=weights", f"ckpt={ckpt}"]))

    acc = event_accumulator(run_dir / "tb")
    expected = {"eval/eval_reliability": "eval_reliability.png", "robustness/robustness": "robustness.png",
                "visualize_weights/weights": "weights.png",
                "visualize_weights/weights_selected": "weights_selected.png"}
    assert set(acc.Tags()["images"]) == trained | set(expected)  # the training figures stay, nothing else
    best_epoch = read_json(run_dir / "metrics.json")["best_epoch"]
    for tag, name in expected.items():
        [event] = acc.Images(tag)
        with Image.open(io.BytesIO(event.encoded_image_string)) as shown, Image.open(run_dir / name) as written:
            assert shown.size == written.size == (event.width, event.height)
            assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(written.convert("RGB")))
        assert event.step == best_epoch
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1 + 3  # training's + one per command

    plain = tmp_path / "plain"  # the same run without TensorBoard files: nothing new appears
    shutil.copytree(run_dir / "checkpoints", plain / "checkpoints")
    eval_main(compose("eval", [f"ckpt={plain / 'checkpoints' / 'best.pt'}"]))
    assert (plain / "eval_reliability.png").is_file() and not (plain / "tb").exists()


def test_mlflow_run_holds_config_metrics_tags_and_files(tracked):
    base, runs = tracked
    run_dir = runs["run"][0]
    history, metrics = read_history(run_dir), read_json(run_dir / "metrics.json")
    client = mlflow_client(base)
    run = only_mlflow_run(client)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "facecls"
    assert (run_dir / "mlflow_run_id").read_text().split()[0] == run.info.run_id
    assert run.data.params["optim.lr"] == "0.002" and run.data.params["trainer.max_epochs"] == "2"
    val_acc = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in val_acc] == [(int(r["epoch"]), float(r["val_acc"])) for r in history]
    assert run.data.metrics["test_acc"] == metrics["test_acc"]
    assert run.data.tags["stop_reason"] == "max_epochs"
    assert run.data.tags["facecls.run_dir"] == str(run_dir.resolve())
    assert run.data.tags["facecls.version"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "history.csv", "curves.png", "confusion_matrix.png"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]
    assert metrics["loggers"] == ["tensorboard", "mlflow"] and metrics["logger_failures"] == {}


def test_unreachable_tracking_server_costs_nothing(tracked):
    """A closed loopback port: one warning, the run finishes (exit 0), metrics.json names the failure."""
    run_dir, returncode, output = tracked[1]["unreachable"]
    assert returncode == 0, output[-3000:]
    assert output.count("logger mlflow failed") == 1, output[-3000:]
    assert "Traceback" not in output
    metrics = read_json(run_dir / "metrics.json")
    assert set(metrics["logger_failures"]) == {"mlflow"} and metrics["logger_failures"]["mlflow"].startswith("start")
    assert metrics["stop_reason"] == "max_epochs" and len(read_history(run_dir)) == 2
    assert len(event_accumulator(run_dir / "tb").Scalars("acc/val")) == 2  # the other tracker carried on


def test_missing_tracker_package_is_one_line_naming_the_extra(compose_train, monkeypatch):
    """A Python where mlflow cannot be imported (None in sys.modules makes `import mlflow` fail)."""
    from facecls.errors import UserError
    from facecls.training.loggers import build_loggers

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(UserError) as err:
        build_loggers(compose_train("logger=mlflow").logger)
    assert str(err.value) == "logger=mlflow needs the mlflow package — pip install 'facecls[mlflow]'"


@pytest.mark.slow  # SIGINT + resume with MLflow (~18 s)
def test_interrupt_and_resume_continue_the_same_mlflow_run(tmp_path, tiny_faces, cache_env):
    run_dir = tmp_path / "run"
    slow = ["model.input_size=16", "trainer.batch_size=2", "trainer.max_epochs=30", "trainer.progress=false"]
    proc = subprocess.Popen([sys.executable, "-m", "facecls", "train", "data=imagefolder", f"data.root={tiny_faces}",
                             *slow, BOTH, f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=cache_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "history.csv").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    client = mlflow_client(tmp_path)
    first = only_mlflow_run(client)
    assert first.info.status == "KILLED" and first.data.tags["stop_reason"] == "interrupted"
    finished = len(read_history(run_dir))

    run_cli("train", f"resume={run_dir}", "trainer.max_epochs=" + str(finished + 1), cwd=tmp_path, env=cache_env)
    run = only_mlflow_run(client)  # still one run: the same one, continued
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    history = read_history(run_dir)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [int(r["epoch"])
                                                                                         for r in history]
    assert [e.step for e in event_accumulator(run_dir / "tb").Scalars("acc/val")] == [int(r["epoch"])
                                                                                       for r in history]


@pytest.mark.parametrize("second_job", ["max_epochs", "diverged"])
def test_sweep_parent_run_ends_when_the_multirun_ends(tmp_path, monkeypatch, second_job):
    """Two sweep jobs' real MlflowLoggers on a real SQLite store: ending both leaves the parent
    RUNNING; the sweep callback's on_multirun_end ends it, FAILED when a job did not end normally."""
    from omegaconf import OmegaConf

    from facecls.config.task import failed_jobs
    from facecls.sweeps.callback import SweepSummary
    from facecls.training.loggers.base import RunInfo
    from facecls.training.loggers.mlflow import MlflowLogger

    failed_jobs.clear()
    sweep = tmp_path / "sweep"
    for job, stop_reason in (("0", "max_epochs"), ("1", second_job)):
        run_dir = sweep / job
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
        logger = MlflowLogger()
        logger.start(RunInfo(run_dir, tmp_path / "outputs", {"seed": int(job)}, {"seed": int(job)},
                             sweep_dir=sweep))
        (run_dir / "metrics.json").write_text(json.dumps({"stop_reason": stop_reason, "test_acc": 0.5}))
        logger.finish("FINISHED" if stop_reason == "max_epochs" else "FAILED")
    client = mlflow_client(tmp_path)
    parent_id = (sweep / "mlflow_parent_run_id").read_text().split()[0]
    children = [client.get_run((sweep / job / "mlflow_run_id").read_text().split()[0]).info for job in "01"]
    assert client.get_run(parent_id).info.status == "RUNNING"  # no job ends the sweep's run

    SweepSummary(summarize=False).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    parent = client.get_run(parent_id).info
    assert parent.status == ("FINISHED" if second_job == "max_epochs" else "FAILED")
    assert parent.end_time >= max(c.end_time for c in children)


@pytest.mark.slow  # two jobs side by side on two cores, then the summary: 14-35 s here
def test_sweep_is_a_parent_run_with_a_child_per_job(tmp_path, tiny_faces, cache_env):
    """joblib, n_jobs=2: both jobs set up the same fresh SQLite store at once and both land. The
    second job diverges (lr=1e30): its run is FAILED, and so is the parent, ended by the sweep's
    callback after every job — not FINISHED by whichever job happened to end last."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from tensorboard.plugins.hparams import metadata

    sweep = tmp_path / "sweep"
    proc = run_cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data=imagefolder",
                   f"data.root={tiny_faces}", *TINY, BOTH, "optim.lr=0.001,1e30", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path, env=cache_env, check=False)
    assert "training diverged" in (sweep / "1" / "train.log").read_text(), proc.stdout[-2000:] + proc.stderr[-2000:]
    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name("facecls")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.run_id == (sweep / "mlflow_parent_run_id").read_text().split()[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    by_lr = {r.data.params["optim.lr"]: r for r in children}
    assert sorted(by_lr) == ["0.001", "1e+30"]
    assert (by_lr["0.001"].info.status, by_lr["1e+30"].info.status) == ("FINISHED", "FAILED")
    parent = parents[0].info
    assert parent.status == "FAILED" and "parent run ended FAILED" in proc.stdout + proc.stderr
    assert parent.end_time > max(r.info.end_time for r in children)  # ended after every job
    swept = set()
    for job in ("0", "1"):
        content = event_accumulator(sweep / job / "tb").PluginTagToContent("hparams")
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        swept.add(start.hparams["optim.lr"].number_value)
    assert swept == {0.001, 1e30}


def wait_for(url: str, data: bytes | None = None, timeout: float = 60.0) -> bytes:
    """The body of ``url`` once the server answers (POST when ``data`` is given)."""
    deadline = time.time() + timeout
    while True:
        try:
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


# 15-17 s; test_mlflow_run_holds_config_metrics_tags_and_files and test_tensorboard_scalars_equal_history_csv
# read the same store and event files with the trackers' own readers (MlflowClient, EventAccumulator)
@pytest.mark.slow
def test_real_servers_show_the_run(tracked):
    """`mlflow server` on the run's SQLite store and `tensorboard --logdir` on its folder, read over
    HTTP."""
    base, runs = tracked
    run_dir = runs["run"][0]
    bin_dir = Path(sys.executable).parent
    mlflow_port, tb_port = free_port(), free_port()
    servers = [
        subprocess.Popen([str(bin_dir / "mlflow"), "server", "--backend-store-uri",
                          f"sqlite:///{base / 'outputs' / 'mlflow.db'}", "--host", "127.0.0.1",
                          "--port", str(mlflow_port), "--workers", "1"],
                         cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
        subprocess.Popen([str(bin_dir / "tensorboard"), "--logdir", str(base), "--host", "127.0.0.1",
                          "--port", str(tb_port)], cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True),
    ]
    try:
        api = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow"
        experiments = json.loads(wait_for(f"{api}/experiments/search", json.dumps({"max_results": 10}).encode()))
        ids = [e["experiment_id"] for e in experiments["experiments"] if e["name"] == "facecls"]
        runs = json.loads(wait_for(f"{api}/runs/search", json.dumps({"experiment_ids": ids}).encode()))["runs"]
        assert len(runs) == 1
        assert runs[0]["info"]["run_id"] == (run_dir / "mlflow_run_id").read_text().split()[0]
        params = {p["key"]: p["value"] for p in runs[0]["data"]["params"]}
        assert params["optim.lr"] == "0.002"

        deadline = time.time() + 60
        while True:  # tensorboard scans the logdir in the background after it starts listening
            tb_runs = json.loads(wait_for(f"http://127.0.0.1:{tb_port}/data/runs"))
            if len(tb_runs) == 2 or time.time() > deadline:
                break
            time.sleep(0.5)
        assert sorted(tb_runs) == ["run/tb", "unreachable/tb"]  # every run under --logdir
    finally:
        # each server started its own process group (mlflow's has worker processes): stop the group
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
