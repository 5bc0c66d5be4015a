"""logger=wandb in WANDB_MODE=offline: a real `facecls train` run, its offline W&B run read
back from the files wandb writes (the run-<id>.wandb record log: config, history, summary)."""
from __future__ import annotations

import json
import struct

import pytest

from helpers import TINY, read_history, read_json, run_cli

pytest.importorskip("wandb")

BLOCK = 32768  # the record log is LevelDB's log format: 32 KiB blocks, 7-byte chunk headers
FULL, LAST = 1, 4


def wandb_records(path) -> list:
    """The protobuf records of an offline run file, in order (wandb has no public reader)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunks, records = path.read_bytes(), 7, b"", []  # 7: the ":W&B" file header
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def test_offline_wandb_run_holds_config_history_summary_and_files(tmp_path, tiny_faces, cache_env):
    env = dict(cache_env, WANDB_MODE="offline", WANDB_SILENT="true")
    run_dir = tmp_path / "run"
    run_cli("train", "data=imagefolder", f"data.root={tiny_faces}", *TINY, "optim.lr=0.002", "logger=wandb",
            f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    records = wandb_records(offline[0] / f"run-{run_id}.wandb")
    by_kind = {}
    for record in records:
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)

    config = {item.key: json.loads(item.value_json) for item in by_kind["run"][0].run.config.update}
    assert config["optim"]["lr"] == 0.002 and config["trainer"]["max_epochs"] == 2
    history = [{item.nested_key[0]: json.loads(item.value_json) for item in r.history.item}
               for r in by_kind["history"]]
    expected = read_history(run_dir)
    assert [h["epoch"] for h in history] == [int(row["epoch"]) for row in expected]
    for got, row in zip(history, expected):
        assert got["val_acc"] == pytest.approx(float(row["val_acc"]), abs=1e-6)
        assert got["train_loss"] == pytest.approx(float(row["train_loss"]), rel=1e-5)
    summary = {}
    for r in by_kind["summary"]:
        summary.update({(u.key or u.nested_key[0]): json.loads(u.value_json) for u in r.summary.update})
    metrics = read_json(run_dir / "metrics.json")
    assert summary["test_acc"] == pytest.approx(metrics["test_acc"])
    assert summary["stop_reason"] == metrics["stop_reason"]
    assert by_kind["exit"][0].exit.exit_code == 0
    saved = {f.path for r in by_kind.get("files", []) for f in r.files.files}
    assert {"metrics.json", "history.csv", "curves.png"} <= saved
    assert (offline[0] / "files" / "metrics.json").is_file()
    assert metrics["loggers"] == ["wandb"] and not metrics["logger_failures"]
