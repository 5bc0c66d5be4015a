"""Open-set runs: a margin loss (``loss=arcface|cosface``) or identity-disjoint splits
(``data.split.by=identity``). What a face embedding is for is telling apart people it never saw,
so such runs are judged by the verification protocol rather than closed-set accuracy:

* each epoch, ``val_verif_acc``: the k-fold accuracy (faces.verification) of same/different
  pairs drawn once from the val split's people (faces.pairs.draw_pairs, identity-disjoint
  folds, the pairs fixed for the whole run by ``data.split.seed``) on L2-normalised embeddings;
  it is the default monitor of such runs (best.pt, early stopping, plateau);
* at test time, the same protocol on pairs drawn from the test split's people
  (metrics.json: ``test_verif_acc`` ± std and stderr over folds, ROC AUC, EER, TAR@FAR).

With ``data.split.by=identity`` the val and test people are not training classes, so closed-set
val/test accuracy does not exist (history.csv's val_loss/val_acc are NaN); with
``data.split.by=image`` it is reported as before, from the loss head's logits without margin.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facecls.errors import UserError
from facecls.faces.pairs import draw_pairs
from facecls.faces.verification import kfold_accuracy, verification_report
from facecls.inference.checkpoint import load_checkpoint
from facecls.inference.embeddings import embed_split
from facecls.inference.evaluate import EvalSettings
from facecls.models.base import FaceModel, input_of
from facecls.training.checkpoint import CheckpointWriter
from facecls.training.loop_types import LoopSettings
from facecls.training.losses import MarginHead, WithLossHead, build_loss_head

log = logging.getLogger(__name__)

FOLDS = 10                 # LFW's protocol
PAIRS_PER_FOLD = 300       # LFW's: same pairs per fold, and as many different ones
VERIFICATION_MONITOR = "val_verif_acc"


def is_open_set(loss_head: nn.Module | None, split_by: str) -> bool:
    """A margin loss or identity-disjoint splits: the run is scored by verification."""
    return isinstance(loss_head, MarginHead) or split_by == "identity"


def monitor_for(monitor: str, open_set: bool) -> str:
    """``trainer.monitor`` of a run: an open-set run's default (val_acc) becomes val_verif_acc."""
    if open_set and monitor == "val_acc":
        return VERIFICATION_MONITOR
    if not open_set and monitor == VERIFICATION_MONITOR:
        raise UserError("trainer.monitor=val_verif_acc needs an open-set run — use loss=arcface|cosface or "
                        "data.split.by=identity, or monitor val_acc.")
    return monitor


def check_mixer(mixer, loss_head: nn.Module | None) -> None:
    if mixer is not None and isinstance(loss_head, MarginHead):
        raise UserError("MixUp/CutMix mix labels, and a margin loss needs one true identity per image — drop "
                        "reg=mixup/cutmix (aug.mixup_alpha/cutmix_alpha) or use loss=cross_entropy.")


class _Penultimate(nn.Module):
    """A classifier module that is not a FaceModel (a frozen backbone's head on cached features)
    seen as an embedder: the input of its last linear layer."""

    def __init__(self, net: nn.Module):
        super().__init__()
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UserError(f"{type(net).__name__} has no linear classification layer to take embeddings from.")
        self.net, self.layer = net, linears[-1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return input_of(self.layer, self.net, x)


def embedder_of(net: nn.Module) -> nn.Module:
    """Something with ``embed(x)`` for what trains (DDP-wrapped, compiled, with or without a loss head)."""
    if isinstance(net, DistributedDataParallel):
        net = net.module
    net = getattr(net, "_orig_mod", net)  # a compiled module's own
    if isinstance(net, (FaceModel, WithLossHead)):
        return net
    return _Penultimate(net)


@dataclass
class SplitPairs:
    """Same/different pairs over the rows of one split, drawn once."""

    a: torch.Tensor
    b: torch.Tensor
    same: np.ndarray
    folds: np.ndarray
    per_fold: int

    @classmethod
    def draw(cls, split, name: str, seed: int, folds: int = FOLDS, per_fold: int = PAIRS_PER_FOLD) -> SplitPairs:
        """Identity-disjoint folds of pairs from ``split``'s people (labels); fewer pairs per fold
        (and fewer folds, never under 2) when its people and images cannot fill LFW's 10 × 300."""
        rows: dict[str, int] = {str(f): i for i, f in enumerate(split.files)}
        by_identity: dict[str, list[str]] = {}
        for f, label in zip(split.files, split.labels.tolist()):
            by_identity.setdefault(str(label), []).append(str(f))
        people = len(by_identity)
        folds = min(folds, people // 2)
        if folds < 2:
            raise UserError(f"the {name} split holds {people} people — verification pairs need at least 4 "
                            f"(2 folds of 2) — use more identities or a larger data.split.{name}.")
        pairs, wanted = None, per_fold
        while pairs is None:  # LFW's 10 folds first, with fewer pairs each; then fewer folds
            try:
                pairs = draw_pairs(by_identity, folds=folds, pairs_per_fold=per_fold, seed=seed)
            except UserError:
                if per_fold > 1:
                    per_fold = max(1, per_fold // 2)
                elif folds > 2:
                    folds, per_fold = folds - 1, wanted
                else:
                    raise
        if per_fold < PAIRS_PER_FOLD or folds < FOLDS:
            log.info("Verification on the %s split: %d folds × %d same + %d different pairs over %d people.",
                     name, folds, per_fold, per_fold, people)
        return cls(a=torch.tensor([rows[str(p.path_a)] for p in pairs]),
                   b=torch.tensor([rows[str(p.path_b)] for p in pairs]),
                   same=np.array([p.same for p in pairs]), folds=np.array([p.fold for p in pairs]),
                   per_fold=per_fold)

    def scores(self, embeddings: torch.Tensor) -> np.ndarray:
        """Cosine similarity of each pair (embeddings are L2-normalised)."""
        return (embeddings[self.a] * embeddings[self.b]).sum(1).double().numpy()


class Verification:
    """``val_verif_acc`` of a network on the val split's pairs (LoopSettings.verification)."""

    def __init__(self, data, prepare, settings: EvalSettings, seed: int):
        self.split, self.prepare, self.settings = data.val, prepare, settings
        self.pairs = SplitPairs.draw(data.val, "val", seed)

    def __call__(self, net: nn.Module) -> float:
        emb = embed_split(embedder_of(net), self.split, self.prepare, self.settings)
        return kfold_accuracy(self.pairs.scores(emb), self.pairs.same, self.pairs.folds).mean


def test_verification(net: nn.Module, data, prepare, settings: EvalSettings, seed: int) -> dict:
    """metrics.json's verification entries for the test split's people (best weights already in ``net``)."""
    pairs = SplitPairs.draw(data.test, "test", seed)
    emb = embed_split(embedder_of(net), data.test, prepare, settings)
    report = verification_report(pairs.scores(emb), pairs.same, pairs.folds)
    return {"test_verif_acc": report["accuracy_mean"], "test_verif_acc_std": report["accuracy_std"],
            "test_verif_acc_stderr": report["accuracy_stderr"], "test_verif_std_kind": report["accuracy_std_kind"],
            "test_verif_fold_accuracies": report["fold_accuracies"], "test_verif_pairs": report["n_pairs"],
            "test_verif_folds": report["n_folds"], "test_roc_auc": report["roc_auc"], "test_eer": report["eer"],
            "test_tar_at_far": report["tar_at_far"], "test_far_left_out": report["far_left_out"]}


@dataclass
class OpenSetTest:
    """What finish_run does for an open-set run (its ``open_set`` argument): put the best epoch's
    loss head back, write the best val_verif_acc and the test split's verification numbers;
    ``closed_set`` says whether closed-set test accuracy still means something (split by image)."""

    seed: int
    closed_set: bool
    loss_head: nn.Module | None = None
    checkpoints: CheckpointWriter | None = None  # where the best epoch's loss head is (memory or best.pt)

    def best_loss_head(self) -> dict | None:
        if self.checkpoints is None:
            return None
        if self.checkpoints.best_loss_head is not None:
            return self.checkpoints.best_loss_head
        best = self.checkpoints.best_path  # a resumed run whose best epoch came before the resume
        return load_checkpoint(best).loss_head if best.is_file() else None

    def __call__(self, net: nn.Module, data, prepare, settings: EvalSettings, best_row: dict | None) -> dict:
        if self.loss_head is not None and (state := self.best_loss_head()) is not None:
            self.loss_head.load_state_dict(state)
        metrics = {"best_val_verif_acc": best_row.get(VERIFICATION_MONITOR) if best_row else None}
        if not self.closed_set:  # the val people are no training class: there is no closed-set val score
            metrics.update(best_val_acc=None, best_val_loss=None)
        metrics.update(test_verification(net, data, prepare, settings, self.seed))
        log.info("Test verification (%d folds, %d pairs over the test people): %.4f ± %.4f (stderr), ROC AUC %.4f",
                 metrics["test_verif_folds"], metrics["test_verif_pairs"],
                 metrics["test_verif_acc"], metrics["test_verif_acc_stderr"], metrics["test_roc_auc"])
        return metrics


@dataclass
class OpenSetRun:
    """The open-set parts of one training run, built by :func:`build_open_set` (run.build_run)."""

    loss_head: nn.Module | None   # None: a classifier trained on its own logits
    open_set: bool
    split_by: str
    seed: int                     # the pairs' seed (data.split.seed): fixed pairs for runs that compare

    def trained(self, module: nn.Module) -> nn.Module:
        """What trains: ``module`` followed by the loss head, as one module (DDP, EMA, compile see one)."""
        return module if self.loss_head is None else WithLossHead(module, self.loss_head)

    def param_groups(self, groups: list) -> list:
        """The model's optimizer groups plus the loss head's parameters (at the optimizer's lr)."""
        if self.loss_head is None:
            return groups
        head = list(self.loss_head.parameters())
        if groups and isinstance(groups[0], dict):
            return [*groups, {"params": head}]
        return [*groups, *head]

    def monitor(self, monitor: str) -> str:
        return monitor_for(monitor, self.open_set)

    def settings(self, settings: LoopSettings, data, prepare) -> LoopSettings:
        """The loop's open-set settings: labels into the head, val_verif_acc, closed-set val or not."""
        check_mixer(settings.mixer, self.loss_head)
        verification = Verification(data, prepare, settings.eval, self.seed) if self.open_set else None
        return dataclasses.replace(settings, loss_head=self.loss_head is not None, verification=verification,
                                   closed_set_val=self.split_by != "identity")

    def test(self, checkpoints: CheckpointWriter) -> OpenSetTest | None:
        if not self.open_set:
            return None
        return OpenSetTest(self.seed, self.split_by != "identity", self.loss_head, checkpoints)


def build_open_set(cfg, model: FaceModel, num_classes: int, device: torch.device) -> OpenSetRun:
    """The loss head the ``loss`` group names (None for a classifier with cross-entropy) and what
    kind of run this is; a margin loss on a classifier is one line."""
    head = build_loss_head(cfg.get("loss"), model.embedding_dim, num_classes)
    split = cfg.data.get("split") or {}
    return OpenSetRun(loss_head=head.to(device) if head is not None else None,
                      open_set=is_open_set(head, str(split.get("by", "image"))),
                      split_by=str(split.get("by", "image")), seed=int(split.get("seed", 0)))
