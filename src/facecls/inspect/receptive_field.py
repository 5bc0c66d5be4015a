"""The receptive field of every conv/pool layer of a model (report section 1.1, `facecls rf`).

The layers are found by running one dummy image through the model with forward hooks, so
the table follows the real forward order and the real output sizes, whatever the module
tree looks like. Per axis, with j the jump (input pixels between two neighbouring units),
r the receptive field and s the centre of the first unit's field (in input pixels):

    k_eff = d·(k − 1) + 1        j_out = j_in · stride
    r_out = r_in + (k_eff − 1) · j_in
    s_out = s_in + ((k_eff − 1)/2 − pad) · j_in

Layers whose field cannot be derived from a kernel (attention, adaptive pooling that
changes the size, upsampling, an unhooked functional op) are reported in a note and the
walk stops there rather than guessing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from facecls.io import csv_text
from facecls.models.tracing import trace_modules

KNOWN = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
# Modules that mix positions in a way no kernel arithmetic describes.
UNKNOWN = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
           nn.Upsample, nn.ConvTranspose2d, nn.Fold, nn.Unfold, nn.PixelShuffle, nn.PixelUnshuffle)
ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
COLUMNS = ["label", "layer", "type", "kernel", "stride", "padding", "dilation", "output", "jump", "rf", "start"]


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def layer_geometry(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Kernel, stride, padding and dilation of a conv/pool layer, per axis (H, W)."""
    kernel = _pair(module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    padding = module.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":  # PyTorch pads total k_eff − 1, the smaller half in front
        padding = tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))
    return {"kernel": kernel, "stride": _pair(stride), "padding": _pair(padding), "dilation": dilation}


@dataclass
class FieldRow:
    label: str          # conv1, pool1, conv2 … (a pool is numbered after the conv before it)
    layer: str          # the module's name in the model, e.g. features.3
    type: str
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    output: tuple       # output height, width
    jump: tuple
    rf: tuple
    start: tuple


@dataclass
class FieldTable:
    input_size: tuple
    rows: list[FieldRow]
    notes: list[str]


def receptive_fields(model: nn.Module, input_size: int | tuple[int, int], in_channels: int = 3) -> FieldTable:
    """Walk the conv/pool layers of ``model`` on an ``input_size`` image; return the table."""
    size = _pair(input_size)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    calls = trace_modules(model, torch.zeros(1, in_channels, *size, device=device))
    jump, rf, start = (1, 1), (1, 1), (0.5, 0.5)  # field of one input pixel, centred on it
    current = size  # spatial size the next known layer should see
    rows: list[FieldRow] = []
    notes: list[str] = []
    convs = 0
    for call in calls:
        m, shape_in, shape_out = call.module, call.input_shape, call.output_shape
        spatial_in = tuple(shape_in[-2:]) if shape_in and len(shape_in) == 4 else None
        spatial_out = tuple(shape_out[-2:]) if shape_out and len(shape_out) == 4 else None
        if isinstance(m, UNKNOWN) or (isinstance(m, ADAPTIVE) and spatial_in != spatial_out):
            notes.append(f"stopped at {call.name} ({type(m).__name__}): its receptive field does not "
                         "follow from a kernel; every later unit may see the whole input.")
            break
        if not isinstance(m, KNOWN):
            continue
        if spatial_in != current:
            notes.append(f"stopped before {call.name}: the feature map changed from {current} to "
                         f"{spatial_in} outside any module (a functional call in forward).")
            break
        g = layer_geometry(m)
        k_eff = tuple(d * (k - 1) + 1 for k, d in zip(g["kernel"], g["dilation"]))
        start = tuple(s + ((ke - 1) / 2 - p) * j for s, ke, p, j in zip(start, k_eff, g["padding"], jump))
        rf = tuple(r + (ke - 1) * j for r, ke, j in zip(rf, k_eff, jump))
        jump = tuple(j * s for j, s in zip(jump, g["stride"]))
        current = spatial_out
        if isinstance(m, nn.Conv2d):
            convs += 1
        label = f"conv{convs}" if isinstance(m, nn.Conv2d) else f"pool{convs}"
        rows.append(FieldRow(label, call.name, type(m).__name__, g["kernel"], g["stride"], g["padding"],
                             g["dilation"], spatial_out, jump, rf, start))
    wider = next((row for row in rows if any(r > n for r, n in zip(row.rf, size))), None)
    if wider is not None:
        notes.append(f"from {wider.label} on, a field ({fmt(wider.rf)}) is larger than the {size[0]}×{size[1]} "
                     "input: part of it lies in the padding.")
    if not rows and not notes:
        notes.append("no conv/pool layers: every unit of the first layer sees the whole input.")
    return FieldTable(size, rows, notes)


def fmt(value) -> str:
    """(a, a) → 'a', (a, b) → 'a×b'; floats without a trailing .0."""
    def one(v):
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    if isinstance(value, tuple):
        return one(value[0]) if len(set(value)) == 1 else "×".join(one(v) for v in value)
    return str(value)


def format_table(table: FieldTable) -> str:
    """The table as aligned text lines (header first), output sizes as H×W."""
    lines = [COLUMNS]
    for row in table.rows:
        cells = {k: fmt(v) for k, v in asdict(row).items()}
        cells["output"] = "×".join(str(v) for v in row.output)
        lines.append([cells[c] for c in COLUMNS])
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(w) if i > 2 else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths))) for line in lines)


def table_csv(table: FieldTable) -> str:
    def cells(row) -> list[str]:
        values = {k: fmt(v) for k, v in asdict(row).items()}
        values["output"] = "×".join(str(v) for v in row.output)
        return [values[c] for c in COLUMNS]

    return csv_text(COLUMNS, (cells(row) for row in table.rows))
