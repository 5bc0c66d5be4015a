"""The report's sections in order: what each one trains and which figures it draws.

Each figure is a facecls command run on a section's result, so every figure of the report
can be redrawn by hand with the command printed next to it in report.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Figure:
    number: str           # the report's figure number(s), e.g. "8, 9"
    caption: str
    command: list[str]    # facecls command; {ckpt} / {run} / {out} are filled in, None = a run file
    file: str             # the PNG it writes (relative to {out}, or to the run dir for run files)
    run_file: bool = False  # a file every training run writes already (curves.png, confusion_matrix.png)


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    experiment: str | None = None        # conf/experiment/<id>.yaml to train (None: no training)
    reuse: str | None = None             # train nothing; use this section's run instead
    sweep: bool = False                  # a multirun: one run dir per configuration
    alexnet: bool = False                # needs pretrained AlexNet weights
    extra: bool = False                  # beyond the report: only with report.extra_regularisers=true
    figures: list[Figure] = field(default_factory=list)
    tools: list[list[str]] = field(default_factory=list)  # extra commands without a training run
    own_data: bool = False               # trains on the experiment's own data, not the report's data=…
    open_set: bool = False               # verify each run on unseen people and compare them (report/open_set.py)


CURVES = "curves.png"
CONFUSION = "confusion_matrix.png"

SECTIONS = [
    # two stacked convs (5×5 then 3×3): the report's 1.1 answer, a 7×7 field
    Section("s1_1", "1.1 Receptive field", tools=[
        ["rf", "model=convnet", "model.kernel_size=[5,3]", "out={out}/two_convs"],
        ["rf", "model=convnet", "out={out}/convnet"],
        ["rf", "model=alexnet_feature", "model.cut=pool5", "out={out}/alexnet"]]),
    Section("s1_2", "1.2 The baseline ConvNet", "s1_2_baseline",
            figures=[Figure("", "accuracy and loss history", [], CURVES, run_file=True)]),
    Section("s1_3", "1.3 Pooling", "s1_3_pooling",
            figures=[Figure("", "accuracy and loss history", [], CURVES, run_file=True)]),
    Section("s1_4_dropout", "1.4 Dropout", "s1_4_dropout", sweep=True),
    Section("s1_4_weight_decay", "1.4 Weight decay (Adam vs SGD)", "s1_4_weight_decay", sweep=True),
    Section("s1_4_early_stopping", "1.4 Early stopping", "s1_4_early_stopping", sweep=True),
    Section("s1_4_lr_schedule", "1.4 Learning-rate schedules", "s1_4_lr_schedule", sweep=True),
    Section("s1_4_modern", "1.4 Modern regularisers: warm-up, EMA, MixUp, CutMix (beyond the report)",
            "s1_4_modern_regularisers", sweep=True, extra=True),
    Section("s1_5", "1.5 Architecture shape", "s1_5_architecture", sweep=True),
    Section("s1_6", "1.6 The best ConvNet", "s1_6_best", figures=[
        Figure("1", "final test performance (test confusion matrix)", [], CONFUSION, run_file=True),
        Figure("", "accuracy and loss history", [], CURVES, run_file=True)]),
    Section("s1_7", "1.7 Robustness to variations of the data", reuse="s1_6", figures=[
        Figure("", "accuracy under each variation vs clean", ["robustness", "ckpt={ckpt}", "out={out}"],
               "robustness.png")]),
    Section("s2_1", "2.1 The MLP", "s2_1_mlp", figures=[
        Figure("2", "accuracy history and loss history", [], CURVES, run_file=True),
        Figure("3", "final test performance (test confusion matrix)", [], CONFUSION, run_file=True)]),
    Section("s2_2", "2.2 AlexNet as a fixed feature extractor", "s2_2_alexnet_feature", alexnet=True, figures=[
        Figure("4", "accuracy history and loss history", [], CURVES, run_file=True),
        Figure("5", "final test performance (test confusion matrix)", [], CONFUSION, run_file=True)]),
    Section("s2_3", "2.3 Weight images", "s2_3_weights", sweep=True, figures=[
        Figure("6", "first-layer neurons of each MLP as images",
               ["visualize", "weights", "ckpt={ckpt}", "out={out}"], "weights.png")]),
    Section("s2_4", "2.4 Finetuning AlexNet", "s2_4_alexnet_finetune", alexnet=True, figures=[
        Figure("7", "accuracy history and loss history", [], CURVES, run_file=True),
        Figure("8, 9", "false and correct test predictions",
               ["visualize", "predictions", "ckpt={ckpt}", "out={out}"], "predictions.png")]),
    Section("s2_5", "2.5 Gradient visualisation: guided backprop", reuse="s2_4", alexnet=True, figures=[
        Figure("10", "accuracy history and loss history", [], CURVES, run_file=True),
        Figure("11–15", "input with prediction; guided backprop colour, gray, negative and positive saliency",
               ["visualize", "attribution", "method=guided_backprop", "ckpt={ckpt}", "out={out}"],
               "attribution_guided_backprop_*.png")]),
    # beyond the report: recognising people never seen in training (synthetic identities, always)
    Section("faces_open_set", "Beyond the report: open-set face recognition (cross-entropy features vs ArcFace vs "
            "CosFace on unseen people)", "faces/open_set", sweep=True, own_data=True, open_set=True),
]
