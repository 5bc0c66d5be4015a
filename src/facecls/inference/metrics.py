"""Classification metrics from labels and predicted probabilities — pure torch, no files.

Per class: precision, recall, F1 and support from the confusion matrix. Over a split:
accuracy, macro- and weighted-F1, balanced accuracy (mean per-class recall), top-k accuracy,
and the calibration numbers (expected calibration error over equal-width confidence bins,
negative log-likelihood). Every function takes plain tensors, so each is checked against a
hand computation in tests/test_metrics.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ECE_BINS = 15
TOP_K = 5  # top-k accuracy is reported when there are more classes than this


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts with true classes on rows and predicted classes on columns."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    # 0/0 (a class never predicted, or absent from the split) counts as 0, as scikit-learn does
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))


@dataclass
class PerClass:
    """One entry per class, in class-index order."""

    precision: torch.Tensor
    recall: torch.Tensor
    f1: torch.Tensor
    support: torch.Tensor  # true images of the class in the split


def per_class(matrix: torch.Tensor) -> PerClass:
    """Precision, recall, F1 and support of each class from a confusion matrix."""
    m = matrix.double()
    hits = m.diagonal()
    predicted, support = m.sum(0), m.sum(1)
    precision, recall = _ratio(hits, predicted), _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return PerClass(precision, recall, f1, support.long())


def top_k_accuracy(probabilities: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable ones."""
    if not len(labels):
        return 0.0
    top = probabilities.topk(min(k, probabilities.shape[1]), dim=1).indices
    return (top == labels.view(-1, 1)).any(1).double().mean().item()


@dataclass
class Calibration:
    """Equal-width confidence bins: images, mean confidence and accuracy in each."""

    edges: torch.Tensor       # n_bins + 1 edges from 0 to 1
    counts: torch.Tensor      # images per bin
    confidence: torch.Tensor  # mean top-1 probability per bin (0 where empty)
    accuracy: torch.Tensor    # share correct per bin (0 where empty)

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy − confidence|."""
        total = self.counts.sum().item()
        if not total:
            return 0.0
        return ((self.accuracy - self.confidence).abs() * self.counts).sum().item() / total


def calibration(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = ECE_BINS) -> Calibration:
    """Bin the top-1 probabilities into ``n_bins`` equal-width bins (right-closed, as in
    Guo et al. 2017: a confidence of exactly 1 falls in the last bin)."""
    confidence = confidence.double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    index = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    counts = torch.bincount(index, minlength=n_bins)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidence)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correct.double())
    return Calibration(edges, counts, _ratio(conf_sum, counts.double()), _ratio(hit_sum, counts.double()))


def negative_log_likelihood(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean −log p(true class); p is clamped away from 0 so one certain mistake stays finite."""
    if not len(labels):
        return 0.0
    p = probabilities.double().gather(1, labels.long().view(-1, 1)).squeeze(1)
    return (-p.clamp(min=1e-12).log()).mean().item()


def summary_metrics(probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    n_bins: int = ECE_BINS) -> dict:
    """The split-level numbers (plain floats) of a probabilities matrix N×C and its labels."""
    predictions = probabilities.argmax(1)
    stats = per_class(confusion_matrix(labels, predictions, num_classes))
    # Balanced accuracy averages the recall of the classes in the split; macro-F1 the classes
    # in the split or predicted (as scikit-learn does): an absent class has no recall to count.
    present = stats.support > 0
    seen = present | (torch.bincount(predictions, minlength=num_classes) > 0)
    weights = stats.support.double() / max(int(stats.support.sum()), 1)
    confidence = probabilities.max(1).values
    return {
        "acc": (predictions == labels).double().mean().item() if len(labels) else 0.0,
        "macro_f1": stats.f1[seen].mean().item() if seen.any() else 0.0,
        "weighted_f1": (stats.f1 * weights).sum().item(),
        "balanced_acc": stats.recall[present].mean().item() if present.any() else 0.0,
        f"top{TOP_K}_acc": top_k_accuracy(probabilities, labels, TOP_K) if num_classes > TOP_K else None,
        "ece": calibration(confidence, predictions == labels, n_bins).ece,
        "nll": negative_log_likelihood(probabilities, labels),
    }


def fit_temperature(probabilities: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(log p / T)`` on a held-out
    split (temperature scaling, Guo et al. 2017). log p equals the logits up to a constant per
    row, which softmax ignores, so the probabilities suffice."""
    log_p = probabilities.double().clamp(min=1e-12).log()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(log_p / log_t.exp(), labels.long())
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp())


def with_temperature(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """The probabilities rescaled by ``temperature`` (> 1 softens, < 1 sharpens; argmax unchanged)."""
    return (probabilities.double().clamp(min=1e-12).log() / temperature).softmax(1).to(probabilities.dtype)
