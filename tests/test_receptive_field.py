"""Receptive-field arithmetic: AlexNet's known values, the report's 1.1 answer, a strided and
dilated toy net checked by hand and by gradients, the layers it must not guess, and networks
with branches (ResNet's residual adds, DenseNet's concatenations, EfficientNet's squeeze-
excitation gates) followed along the data flow and checked against gradient footprints."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from facecls.inspect import receptive_field
from facecls.inspect.receptive_field import receptive_fields
from facecls.models.convnet import ConvNet
from facecls.models.mlp import MLP

from helpers import read_csv, run_cli

CONF = Path(__file__).resolve().parents[1] / "conf"


def by_label(table):
    return {row.label: row for row in table.rows}


def test_torchvision_alexnet_at_224_matches_the_known_fields():
    table = receptive_fields(torchvision.models.alexnet(weights=None), 224)
    rows = by_label(table)
    assert list(rows) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    assert [rows[k].rf[0] for k in rows] == [11, 19, 51, 67, 99, 131, 163, 195]
    assert [rows[k].jump[0] for k in rows] == [4, 8, 8, 16, 16, 16, 16, 32]
    assert [rows[k].output for k in rows] == [(55, 55), (27, 27), (27, 27), (13, 13), (13, 13), (13, 13),
                                              (13, 13), (6, 6)]
    assert rows["conv5"].layer == "features.10" and rows["pool5"].type == "MaxPool2d"
    assert table.notes == []  # the adaptive pool keeps 6×6 at 224: nothing to report


def test_report_1_1_two_stacked_convs_give_7x7():
    # A 5×5 conv then a 3×3 conv: a Z2 unit sees 3×3 of Z1, which sees 7×7 of the image.
    rows = by_label(receptive_fields(ConvNet(3, input_size=32, kernel_size=[5, 3]), 32))
    assert rows["conv1"].rf == (5, 5) and rows["conv2"].rf == (7, 7)
    # The other reading of the question (3×3 stride 2, then 3×3) gives 7×7 as well.
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3))
    assert by_label(receptive_fields(net, 32))["conv2"].rf == (7, 7)


def toy_net():
    return nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(1, 1, 3, dilation=2), nn.AvgPool2d(2))


def test_strided_dilated_toy_case_by_hand():
    rows = receptive_fields(toy_net(), 32, in_channels=1).rows
    # conv1: k 3, s 2, p 1 → r 3, j 2, start 0.5 + (1 − 1)·1 = 0.5, out (32+2−3)//2+1 = 16
    # conv2: k_eff 2·2+1 = 5 → r 3 + 4·2 = 11, j 2, start 0.5 + (2 − 0)·2 = 4.5, out 16−4 = 12
    # pool:  k 2, s 2 → r 11 + 1·2 = 13, j 4, start 4.5 + 0.5·2 = 5.5, out 6
    assert [(r.rf[0], r.jump[0], r.start[0], r.output[0]) for r in rows] == [
        (3, 2, 0.5, 16), (11, 2, 4.5, 12), (13, 4, 5.5, 6)]
    assert rows[1].dilation == (2, 2) and rows[0].padding == (1, 1)


def test_field_equals_the_gradient_footprint_of_one_unit():
    """Independent check: the input pixels that reach one (interior) output unit."""
    net = toy_net()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0)  # positive weights: no cancellation in the gradient
    rows = receptive_fields(net, 32, in_channels=1).rows
    x = torch.rand(1, 1, 32, 32, requires_grad=True) + 1.0  # positive input: every ReLU passes
    x.retain_grad()
    y = net(x)
    i = 3  # an interior unit, clear of the padding
    y[0, 0, i, i].backward()
    rows_hit = x.grad[0, 0].abs().sum(1).nonzero().flatten()
    assert len(rows_hit) == rows[-1].rf[0] == 13
    # its field starts at start + i·jump − (rf − 1)/2 (pixel i spans [i, i+1))
    first = rows[-1].start[0] + i * rows[-1].jump[0] - rows[-1].rf[0] / 2
    assert rows_hit[0].item() == first


def test_layers_it_cannot_reason_about_are_named_not_guessed():
    squash = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    table = receptive_fields(squash, 16)
    assert [r.label for r in table.rows] == ["conv1"]
    assert len(table.notes) == 1 and "1 (AdaptiveAvgPool2d)" in table.notes[0]

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.b(nn.functional.max_pool2d(self.a(x), 2))  # invisible to module hooks

    table = receptive_fields(Functional(), 16)
    assert [r.layer for r in table.rows] == ["a"] and "outside any module" in table.notes[0]

    mlp = receptive_fields(MLP(3, input_size=8), 8)
    assert mlp.rows == [] and "whole input" in mlp.notes[0]


def linearised(net: nn.Module) -> nn.Module:
    """``net`` with nothing that could zero a gradient: positive constant conv weights, ReLUs
    removed, max pools as average pools of the same geometry, batch norms as identities."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.ReLU, nn.Dropout)):
                setattr(module, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
            m.reset_running_stats()
    return net.eval()


def gradient_footprints(net: nn.Module, layers: list[str], size: int) -> dict[str, tuple[int, int, int, int]]:
    """Independent check: backprop from the centre unit of each layer's output (all channels)
    to a size×size input; → (unit, first row hit, last row hit + 1, rows hit) per layer."""
    outputs = {}
    handles = [net.get_submodule(name).register_forward_hook(
        lambda m, a, out, name=name: outputs.__setitem__(name, out)) for name in layers]
    x = torch.ones(1, 3, size, size, requires_grad=True)
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    found = {}
    for name in layers:
        y = outputs[name]
        u = y.shape[-1] // 2
        (grad,) = torch.autograd.grad(y[0, :, u, u].sum(), x, retain_graph=True)
        hit = grad[0].abs().sum((0, 2)).nonzero().flatten()  # input rows with a nonzero gradient
        found[name] = (u, hit[0].item(), hit[-1].item() + 1, len(hit))
    return found


def assert_fields_match_gradients(rows: dict, footprints: dict):
    for name, (u, first, end, count) in footprints.items():
        row = rows[name]
        centre = row.start[0] + u * row.jump[0]  # the unit's field: centre ± rf/2
        assert (first, end, count) == (centre - row.rf[0] / 2, centre + row.rf[0] / 2, row.rf[0]), name


def test_resnet18_follows_the_residual_branches_and_matches_gradients():
    table = receptive_fields(torchvision.models.resnet18(weights=None), 224)
    rows = {row.layer: row for row in table.rows}
    assert len(table.rows) == 21 and table.rows[1].label == "pool1" and table.rows[-1].label == "conv20"
    assert rows["layer2.0.downsample.0"].rf == (43, 43) and rows["layer2.0.downsample.0"].label == "conv8"
    last = [f"layer{i}.1.conv2" for i in range(1, 5)]
    assert [(rows[n].rf[0], rows[n].jump[0], rows[n].output[0]) for n in last] == [
        (43, 4, 56), (99, 8, 28), (211, 16, 14), (435, 32, 7)]
    assert [n for n in table.notes if "stopped" in n] == [
        "stopped at avgpool (AdaptiveAvgPool2d): its receptive field does not follow from a kernel; every later "
        "unit may see the whole input."]
    # 448 px: the centre unit of layer4 (435 px) lies wholly inside the image, clear of the padding
    footprints = gradient_footprints(linearised(torchvision.models.resnet18(weights=None)), last, 448)
    assert footprints["layer4.1.conv2"][1:3] == (7, 442)
    assert_fields_match_gradients(rows, footprints)


def test_densenet_concatenations_run_to_the_last_conv_and_match_gradients():
    net = torchvision.models.densenet121(weights=None)
    table = receptive_fields(net, 64)
    convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert table.rows[-1].layer == convs[-1] == "features.denseblock4.denselayer16.conv2"
    assert len([r for r in table.rows if r.type == "Conv2d"]) == len(convs) == 120
    assert not any("No row" in note for note in table.notes)
    rows = {row.layer: row for row in table.rows}
    assert rows["features.denseblock1.denselayer6.conv2"].rf == (59, 59)  # 11 + 6 layers × 2·4
    # the stem, dense block 1 and transition 1 (features' first 6 modules, same names) at 96 px, by gradients
    layers = ["denseblock1.denselayer6.conv2", "transition1.pool"]
    footprints = gradient_footprints(linearised(net.features[:6]), layers, 96)
    assert_fields_match_gradients({name: rows[f"features.{name}"] for name in layers}, footprints)
    assert rows["features.denseblock2.denselayer6.conv2"].rf == (159, 159)


def test_efficientnet_squeeze_excitation_gates_are_noted_not_rows():
    net = torchvision.models.efficientnet_b0(weights=None)
    table = receptive_fields(net, 64)
    gate_convs = {name for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and ".fc" in name}
    convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and name not in gate_convs]
    assert [r.layer for r in table.rows] == convs  # every conv of the main path, in order; no gate conv
    assert table.rows[-1].layer == "features.8.0" and table.rows[-1].rf == (851, 851)
    assert any("16 squeeze-excitation gate(s) (first: features.1.0.block.1.mul)" in n for n in table.notes)
    assert not any("No row" in note for note in table.notes)


class NHWCBlock(nn.Module):
    """ConvNeXt-style: a 7×7 depthwise conv, then a LayerNorm and Linear on channels-last, a residual."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.fc = nn.LayerNorm(c), nn.Linear(c, c)

    def forward(self, x):
        y = self.fc(self.norm(self.dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if x.dim() == 4 and x.mean() > -1e9:  # Python control flow on values: simply run
            return x + y
        return y


def test_permutes_linear_on_channels_and_control_flow_keep_the_field():
    net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), NHWCBlock(), NHWCBlock(), nn.Conv2d(4, 4, 2, stride=2))
    table = receptive_fields(net, 64)
    assert [(r.layer, r.rf[0], r.jump[0]) for r in table.rows] == [
        ("0", 4, 4), ("1.dw", 28, 4), ("2.dw", 52, 4), ("3", 56, 8)]
    assert table.notes == []


def test_a_walk_that_fails_falls_back_to_the_hook_walk(monkeypatch):
    def broken(self, *args):
        raise ValueError("boom")

    monkeypatch.setattr(receptive_field.FieldWalk, "union", broken)
    table = receptive_fields(torchvision.models.resnet18(weights=None), 64)
    assert table.rows[-1].layer == "layer2.0.conv2"  # today's walk: stops at the first branch
    assert "outside any module" in table.notes[0] and "data-flow walk failed (boom)" in table.notes[1]


def test_cli_prints_the_table_and_writes_rf_csv(tmp_path, cache_env):
    proc = run_cli("rf", "model=convnet", "model.kernel_size=[5,3]", "model.pool=true", "input_size=32",
                   f"out={tmp_path / 'rf'}", cwd=tmp_path, env=cache_env)
    rows = read_csv(tmp_path / "rf" / "rf.csv")
    assert [(r["label"], r["rf"], r["jump"], r["output"]) for r in rows] == [
        ("conv1", "5", "1", "28×28"), ("pool1", "6", "2", "14×14"), ("conv2", "10", "2", "12×12"),
        ("pool2", "12", "4", "6×6")]
    assert "pool2 (features.5) sees a 12×12 patch" in proc.stdout + proc.stderr
    # nothing else lands in the working dir (cache/ is the private FACECLS_CACHE_DIR cache_env points there)
    assert [p for p in tmp_path.iterdir() if p.name != "cache"] == [tmp_path / "rf"]


@pytest.mark.skipif(not (CONF / "model" / "alexnet_feature.yaml").is_file(), reason="no AlexNet configs")
def test_cli_on_alexnet_feature_needs_no_weights(tmp_path, cache_env):
    env = dict(cache_env, FACECLS_OFFLINE="1", TORCH_HOME=str(tmp_path / "no-weights"))
    run_cli("rf", "model=alexnet_feature", "model.cut=pool5", f"out={tmp_path}", cwd=tmp_path, env=env)
    assert [int(r["rf"]) for r in read_csv(tmp_path / "rf.csv")] == [11, 19, 51, 67, 99, 131, 163, 195]
