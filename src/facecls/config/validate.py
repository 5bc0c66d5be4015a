"""Value checks for the train config: each problem is one line naming the key and the fix.

(Unknown keys and unknown group choices are caught before composing, see overrides.py
and Hydra's struct mode.)"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from facecls.config.checks import SPLITS, check_dropout, check_monitor, check_ratios
from facecls.errors import UserError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _number(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key}={value!r} is not a number — give a numeric value, e.g. {key}=1.")
    return value


FACE_MODES = ("none", "detect")


def normalize_faces(cfg: DictConfig) -> None:
    """``data.faces=detect`` (the short form users type) means ``data.faces.mode=detect`` with the
    other face settings at their defaults; any other non-mapping value is one line."""
    value = OmegaConf.select(cfg, "data.faces", default=None)
    if value is None or isinstance(value, DictConfig):
        return
    mode = {True: "detect", False: "none"}.get(value, value) if isinstance(value, bool) else value
    if mode not in FACE_MODES:
        raise UserError(f"data.faces={value!r} is not a face setting — use data.faces=detect (or none), or set its "
                        "keys: data.faces.mode=detect data.faces.margin=0.25.")
    cfg.data.faces = {"mode": mode}


def validate_train_config(cfg: DictConfig) -> None:
    t = cfg.trainer
    normalize_faces(cfg)
    seed = cfg.get("seed")
    _require(isinstance(seed, int) and not isinstance(seed, bool),
             f"seed={seed!r} is not a whole number — give one, e.g. seed=0.")
    threads = t.get("num_threads")
    _require(threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1),
             f"trainer.num_threads={threads!r} is invalid — use a whole number >= 1 (or null: torch's default).")
    split = cfg.data.get("split")
    if split is not None:  # before any image is read: a typo should fail in a second
        check_ratios(*(_number(cfg, f"data.split.{k}") for k in SPLITS))
    for key in ("batch_size", "eval_batch_size", "max_epochs"):
        value = _number(cfg, f"trainer.{key}")
        _require(isinstance(value, int) and value >= 1,
                 f"trainer.{key}={value} is invalid — it must be a whole number >= 1.")
    lr = _number(cfg, "optim.lr")
    _require(lr > 0, f"optim.lr={lr} is invalid — the learning rate must be > 0 (e.g. optim.lr=0.001).")
    wd = _number(cfg, "optim.weight_decay")
    _require(wd >= 0, f"weight decay {wd} is invalid — it must be >= 0 (reg.weight_decay.value).")
    if "dropout" in (cfg.get("reg") or {}):
        check_dropout(_number(cfg, "reg.dropout.p"))
    if t.early_stopping.patience is not None:  # reg=early_stopping: its values are read through trainer.*
        patience = _number(cfg, "trainer.early_stopping.patience")
        _require(isinstance(patience, int) and patience >= 1,
                 f"reg.early_stopping.patience={patience} is invalid — use a whole number >= 1.")
        _require(_number(cfg, "trainer.early_stopping.min_delta") >= 0,
                 "reg.early_stopping.min_delta must be >= 0.")
    check_monitor(t.monitor)
    ls = _number(cfg, "trainer.label_smoothing")
    _require(0 <= ls < 1, f"trainer.label_smoothing={ls} is out of range — use 0 <= value < 1.")
    if t.grad_clip is not None:
        _require(_number(cfg, "trainer.grad_clip") > 0, "trainer.grad_clip must be > 0 (or null to turn it off).")
    if cfg.sched and "step_size" in cfg.sched:
        _require(_number(cfg, "sched.step_size") >= 1, "sched.step_size must be a whole number >= 1.")
    if cfg.model.get("input_size", 0) is not None:  # null: the model's own size (AlexNet: its weights' crop)
        size = _number(cfg, "model.input_size")
        _require(isinstance(size, int) and size >= 8, f"model.input_size={size} is invalid — use a whole number >= 8.")
