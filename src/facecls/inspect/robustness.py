"""Accuracy of a trained model on changed val/test images (`facecls robustness`)
(report section 1.7) — colour jitter, blur, perspective, rotation, translation, scale.

Beside the accuracy table (robustness.csv), robustness_per_class.csv holds each row's
per-class precision, recall, F1 and support — the numbers and format of training's
per_class.csv (training.scoring.per_class_rows), so the clean test rows equal `facecls eval`'s
eval_per_class.csv.

Each variation is a yaml in conf/variation/ holding torchvision.transforms.v2 classes. The
transform is applied to every uint8 image on its own (its own random draw) before the
model's normalisation, exactly where training augmentation would be. Torch's RNG is reset
to ``seed`` before every variation and split, so a run repeats to the last digit.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Number
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from facecls.config.checks import SPLITS
from facecls.data.batches import BatchPreparer, build_transform
from facecls.errors import UserError
from facecls.inference.evaluate import EvalSettings, evaluate
from facecls.inference.metrics import confusion_matrix
from facecls.inference.scoring import PER_CLASS_COLUMNS, per_class_rows
from facecls.io import csv_text
from facecls.plots import plt, save_figure

CSV_COLUMNS = ["variation", "parameter", "value", "split", "accuracy", "loss", "drop"]
PER_CLASS_CSV_COLUMNS = ["variation", "parameter", "value", "split", *PER_CLASS_COLUMNS]
RESERVED = ("sweep", "transforms")


@dataclass
class Setting:
    """One evaluated setting of a variation (a sweep has one per value)."""

    variation: str
    parameter: str        # e.g. 'sigma=2' or 'degrees=45'
    value: object         # the swept value, or None when the variation is not swept
    transform: object     # a torchvision.transforms.v2 transform
    swept: bool = False


def _describe(node: DictConfig) -> str:
    values = [f"{k}={OmegaConf.to_container(v) if isinstance(v, (DictConfig, ListConfig)) else v}"
              for k, v in node.items() if k not in RESERVED]
    return " ".join(values) or "-"


def variation_settings(variations: DictConfig) -> list[Setting]:
    """Expand the `variation` config into settings, building each one's transform."""
    settings = []
    for name in variations:
        node = variations[name]
        if name == "clean":
            raise UserError("a variation may not be called 'clean' (the name of the unchanged scores) — rename it.")
        if not isinstance(node, DictConfig) or "transforms" not in node:
            raise UserError(f"variation '{name}' has no transforms list — see conf/variation/rotation.yaml "
                            "for the layout of a variation file.")
        sweep = node.get("sweep")
        if sweep is not None and sweep not in node:
            raise UserError(f"variation.{name}.sweep={sweep} names no key of the variation — use one of: "
                            f"{', '.join(k for k in node if k not in RESERVED)} (or null).")
        raw = OmegaConf.to_container(node, resolve=False)
        values = [None] if sweep is None else raw[sweep] if isinstance(raw[sweep], list) else [raw[sweep]]
        for value in values:
            # A standalone copy with one value in place of the list, so the relative
            # interpolations of `transforms` (${...sigma}) resolve to that value.
            single = OmegaConf.create({name: raw})
            if value is not None:
                single[name][sweep] = value
            try:
                transform = build_transform(single[name].transforms, explain=False)  # per image on purpose
            except Exception as err:
                cause = err.__cause__ or err
                raise UserError(f"variation '{name}'{f' ({sweep}={value})' if value is not None else ''} cannot "
                                f"be built: {str(cause).splitlines()[0][:160]} — fix conf/variation/{name}.yaml "
                                "or the override.") from None
            parameter = f"{sweep}={value}" if value is not None else _describe(single[name])
            settings.append(Setting(name, parameter, value, transform, swept=value is not None and len(values) > 1))
    return settings


def evaluate_under(run, split, transform, settings: EvalSettings, seed: int) -> dict:
    """Loss and accuracy (and every prediction) on ``split`` with ``transform`` applied per
    image, RNG seeded first."""
    changed = BatchPreparer(run.data.preprocess, run.device, augment=transform,
                            channels_last=run.prepare.channels_last)
    torch.manual_seed(seed)
    return evaluate(run.model, split, lambda x, train=False: changed(x, train=True), settings,
                    return_predictions=True)


def _per_class(run, split, result: dict) -> list[list]:
    return per_class_rows(confusion_matrix(split.labels, result["predictions"], len(run.classes)), list(run.classes))


def robustness_rows(run, variations: DictConfig, splits: list[str], settings: EvalSettings, seed: int) -> list[dict]:
    """Clean rows first, then one row per (variation setting, split); each row's ``per_class``
    holds its per_class.csv rows."""
    clean, rows = {}, []
    for split_name in splits:
        split = run.data.split(split_name)
        result = evaluate(run.model, split, run.prepare, settings, return_predictions=True)
        clean[split_name] = result["acc"]
        rows.append({"variation": "clean", "parameter": "-", "value": None, "split": split_name,
                     "accuracy": result["acc"], "loss": result["loss"], "drop": 0.0, "swept": False,
                     "per_class": _per_class(run, split, result)})
    for setting in variation_settings(variations):
        for split_name in splits:
            split = run.data.split(split_name)
            try:
                result = evaluate_under(run, split, setting.transform, settings, seed)
            except (TypeError, ValueError, RuntimeError) as err:
                raise UserError(f"variation '{setting.variation}' ({setting.parameter}) failed on the images: "
                                f"{str(err).splitlines()[0][:160]} — its transforms get and must return uint8 "
                                "3×H×W images (wrap float-only ones in v2.ToDtype).") from None
            rows.append({"variation": setting.variation, "parameter": setting.parameter, "value": setting.value,
                         "split": split_name, "accuracy": result["acc"], "loss": result["loss"],
                         "drop": clean[split_name] - result["acc"], "swept": setting.swept,
                         "per_class": _per_class(run, split, result)})
    return rows


def rows_csv(rows: list[dict]) -> str:
    return csv_text(CSV_COLUMNS, ([r["variation"], r["parameter"], "" if r["value"] is None else r["value"],
                                   r["split"], repr(r["accuracy"]), repr(r["loss"]), repr(r["drop"])] for r in rows))


def per_class_csv(rows: list[dict]) -> str:
    """robustness_per_class.csv: every row's per-class precision, recall, F1 and support."""
    return csv_text(PER_CLASS_CSV_COLUMNS, ([r["variation"], r["parameter"], "" if r["value"] is None else r["value"],
                                             r["split"], *cls] for r in rows for cls in r["per_class"]))


def check_splits(splits) -> list[str]:
    names = [str(s) for s in (splits if isinstance(splits, (list, ListConfig)) else [splits])]
    bad = [s for s in names if s not in SPLITS]
    if bad or not names:
        raise UserError(f"splits={names} — use a list of train, val, test (e.g. splits=[val,test]).")
    return names


def _is_number(value) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


def plot_robustness(rows: list[dict], splits: list[str], path: Path) -> Path:
    """Bars for single settings and one curve panel per swept variation; clean accuracy as lines."""
    clean = {r["split"]: r["accuracy"] for r in rows if r["variation"] == "clean"}
    singles = [r for r in rows if r["variation"] != "clean" and not r["swept"]]
    swept = list(dict.fromkeys(r["variation"] for r in rows if r["swept"]))
    panels = (1 if singles else 0) + len(swept)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(max(5.0, 1.1 * len(singles) / len(splits) + 2.5) if singles
                                                          else 4.5, 4), squeeze=False)
    axes = list(axes[0])
    colours = {s: f"C{i}" for i, s in enumerate(splits)}
    width = 0.8 / len(splits)

    def clean_lines(ax):
        for s in splits:
            ax.axhline(clean[s], color=colours[s], linestyle="--", linewidth=1, label=f"clean {s} ({clean[s]:.2f})")

    if singles or not swept:
        ax = axes.pop(0)
        names = list(dict.fromkeys((r["variation"], r["parameter"]) for r in singles))
        for k, s in enumerate(splits):
            heights = [next(r["accuracy"] for r in singles if (r["variation"], r["parameter"]) == n and r["split"] == s)
                       for n in names]
            ax.bar([i + (k - (len(splits) - 1) / 2) * width for i in range(len(names))], heights, width,
                   color=colours[s], label=s)
        ax.set_xticks(range(len(names)), [n[0] for n in names], rotation=30, ha="right")
        clean_lines(ax)
        ax.set_title("accuracy under each variation")
    for name in swept:
        ax = axes.pop(0)
        sweep_rows = [r for r in rows if r["variation"] == name]
        values = list(dict.fromkeys(str(r["value"]) for r in sweep_rows))
        numeric = all(_is_number(r["value"]) for r in sweep_rows)
        for s in splits:
            points = [r for r in sweep_rows if r["split"] == s]
            xs = [r["value"] for r in points] if numeric else [values.index(str(r["value"])) for r in points]
            ax.plot(xs, [r["accuracy"] for r in points], marker="o", color=colours[s], label=s)
        if not numeric:
            ax.set_xticks(range(len(values)), values)
        clean_lines(ax)
        ax.set_xlabel(sweep_rows[0]["parameter"].split("=")[0])
        ax.set_title(name)
    for ax in fig.axes:
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3, axis="y")
    fig.axes[-1].legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def format_rows(rows: list[dict]) -> list[str]:
    """One text line per setting: each split's accuracy and its change from clean."""
    width = max(len(f"{r['variation']} {r['parameter']}") for r in rows)
    clean = {r["split"]: r["accuracy"] for r in rows if r["variation"] == "clean"}
    lines = []
    for key in dict.fromkeys((r["variation"], r["parameter"]) for r in rows):
        cells = [r for r in rows if (r["variation"], r["parameter"]) == key]
        scores = "  ".join(f"{r['split']} {r['accuracy']:.4f}" + (
            "" if key[0] == "clean" else f" ({r['accuracy'] - clean[r['split']]:+.4f})") for r in cells)
        lines.append(f"{f'{key[0]} {key[1]}'.ljust(width)}  {scores}")
    return lines
