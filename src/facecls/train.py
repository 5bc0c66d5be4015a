"""`facecls train`: data → model → the engine loop → best checkpoint on test → run-dir files."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facecls.errors import RunStopped, UserError, reports_user_errors

if TYPE_CHECKING:  # torch loads when a run starts: `facecls train --help` answers without it
    import torch

log = logging.getLogger(__name__)


def loop_settings(cfg: DictConfig, device: torch.device):
    from facecls.engine import LoopSettings
    from facecls.runtime import amp_flag, progress_flag

    t = cfg.trainer
    return LoopSettings(device=device, max_epochs=t.max_epochs, batch_size=t.batch_size,
                        eval_batch_size=t.eval_batch_size, amp=amp_flag(t.amp, device),
                        grad_clip=t.grad_clip, label_smoothing=t.label_smoothing,
                        progress=progress_flag(t.progress), seed=cfg.seed,
                        limit_batches=t.get("limit_batches"))


def trainable_param_groups(model: torch.nn.Module, lr: float):
    """Param groups the optimizer gets. A model may shape them (e.g. a smaller backbone LR)
    through a ``param_groups(lr)`` method; frozen parameters are never handed over."""
    if hasattr(model, "param_groups"):
        return model.param_groups(lr)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("the model has no trainable parameters — check model.freeze.")
    return params


def run_training(cfg: DictConfig, run_dir: Path, dist=None) -> dict:
    """Train one configuration into ``run_dir``; return its metrics. ``dist``: this
    process's place in a DDP group (facecls.distributed), None for one process."""
    import torch

    from facecls.checkpoint import save_checkpoint
    from facecls.data.batches import BatchPreparer, build_transform
    from facecls.data.dataset import build_data
    from facecls.distributed import DistContext
    from facecls.engine import EarlyStopping, fit
    from facecls.models import build_model, preprocess_for
    from facecls.interrupt import GracefulStop
    from facecls.resume import load_resume_point, restore_training_state
    from facecls.run_outputs import finish_run
    from facecls.runtime import compile_model, configure_threads, seed_everything, select_device

    started = time.perf_counter()
    dist = dist or DistContext(device=select_device(cfg.trainer.device))
    device = dist.device
    configure_threads(cfg.trainer.num_threads)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    settings = dist.adapt(loop_settings(cfg, device))
    resume = load_resume_point(run_dir) if cfg.get("resume") else None

    prep = preprocess_for(cfg.model)
    with dist.main_first():  # DDP: rank 0 fills the disk caches, the others read them
        data = build_data(cfg.data, prep, cfg.paths.cache_dir, settings.progress)
    model = build_model(cfg.model, num_classes=len(data.classes)).to(device)
    channels_last = bool(cfg.trainer.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = build_transform(cfg.aug.get("transforms"))
    prepare = BatchPreparer(prep, device, augment, channels_last)
    if cfg.trainer.get("overfit_batches"):
        # Sanity check (debug=overfit): a few fixed batches, also used as the validation set.
        data = data.with_train_subset(cfg.trainer.overfit_batches * cfg.trainer.batch_size)

    net = model
    if hasattr(model, "cached_feature_data"):
        # A frozen backbone: compute its features once and train only the head on them.
        net, data, prepare = model.cached_feature_data(data, prepare, augment, cfg, settings)
    net = compile_model(net, cfg.trainer.get("compile", False))

    # _convert_: param groups reach the optimizer as plain dicts (not DictConfig)
    optimizer = instantiate(cfg.optim, params=trainable_param_groups(model, cfg.optim.lr), _convert_="partial")
    scheduler = instantiate(cfg.sched, optimizer=optimizer) if cfg.sched else None
    es = cfg.reg.get("early_stopping") if cfg.get("reg") else None
    stopper = EarlyStopping(monitor=cfg.trainer.monitor, patience=es.patience if es else None,
                            min_delta=es.min_delta if es else 0.0)
    config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_dir = run_dir / "checkpoints"
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("Model %s: %s parameters (%s trainable) on %s", cfg.model._target_.rsplit(".", 1)[-1],
             f"{n_params:,}", f"{n_trainable:,}", device)

    if resume:
        restore_training_state(resume, model, optimizer, scheduler, stopper)

    best_in_memory: dict = {}

    def save(kind: str, epoch: int, result) -> None:
        if not cfg.trainer.get("checkpoints", True):  # debug=fast: keep the best weights in memory only
            if kind == "best":
                best_in_memory.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            return
        # Only last.pt carries what resuming needs (optimizer, scheduler, random states);
        # best.pt is for inference.
        resumable = kind == "last"
        path = ckpt_dir / f"{kind}.pt"
        try:
            save_checkpoint(path, model=model, config=config, classes=data.classes,
                            preprocess=prep, epoch=epoch, optimizer=optimizer if resumable else None,
                            scheduler=scheduler if resumable else None,
                            early_stopping=stopper.state_dict(), history=result.history,
                            stop_reason=result.stop_reason, rng=result.rng if resumable else None)
        except OSError as err:
            raise UserError(f"could not write {path}: {err.strerror or err} — free some disk space "
                            "(or fix permissions) and resume; the previous checkpoint is intact.") from None

    with GracefulStop() as stop:
        result = fit(dist.wrap(net, cfg.seed), data, prepare, optimizer, scheduler, stopper, settings, run_dir,
                     save, stop=stop, resume=resume)
    if not dist.is_main:
        return {}  # DDP: rank 0 scores the test split and writes the results
    metrics = finish_run(run_dir, model, net, data, prepare, settings, result, best_in_memory or None,
                         extra={"num_params": n_params, "trainable_params": n_trainable,
                                "device": str(device), "wall_seconds": time.perf_counter() - started})
    stopped_early(result, metrics, run_dir, cfg.optim.lr)
    return metrics


def stopped_early(result, metrics: dict, run_dir: Path, lr: float) -> None:
    """Raise RunStopped (one line, non-zero exit) for a run that did not end normally."""
    value = metrics["best_val_acc"] or 0.0  # what a sweeper gets for this run
    if result.stop_reason == "interrupted":
        raise RunStopped(f"interrupted after {len(result.history)} finished epoch(s); run files are in "
                         f"{run_dir} — continue with: facecls train resume={run_dir}", exit_code=130, value=value)
    if result.stop_reason == "diverged":
        raise RunStopped(f"training diverged (non-finite loss) in epoch {len(result.history) + 1}; best "
                         f"checkpoint kept in {run_dir} — try a lower optim.lr (now {lr:g}) or "
                         "trainer.grad_clip=1.0.", exit_code=3, value=value)


@reports_user_errors(failure_value=0.0)  # a failed sweep trial scores 0, never NaN
def main(cfg: DictConfig):
    from facecls.distributed import session
    from facecls.runtime import select_device
    from facecls.validate import validate_train_config

    validate_train_config(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with session(cfg.trainer.get("strategy", "single"), select_device(cfg.trainer.device)) as dist:
        metrics = run_training(cfg, run_dir, dist)
    # The value a sweeper (Optuna) maximises: always a finite number.
    return float(metrics.get("best_val_acc") or 0.0)
