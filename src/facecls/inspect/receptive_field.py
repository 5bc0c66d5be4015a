"""The receptive field of every conv/pool layer of a model (report section 1.1, `facecls rf`).

The field follows the data flow, not the order of the calls: one dummy image runs through the
model while every tensor carries its own field (forward hooks on the torch.nn modules, and a
``TorchFunctionMode`` for the functional ops between them — a residual ``+``, ``torch.cat``, a
reshape — keyed by the identity of the tensors). Python control flow in ``forward`` is simply
run. Per axis, with j the jump (input pixels between two neighbouring units), r the receptive
field and s the centre of the first unit's field (in input pixels; pixel i spans [i, i+1), so
unit u covers [s + u·j − r/2, s + u·j + r/2)):

* a conv/pool module (one row of the table, in forward order):

      k_eff = d·(k − 1) + 1        j_out = j_in · stride
      r_out = r_in + (k_eff − 1) · j_in
      s_out = s_in + ((k_eff − 1)/2 − pad) · j_in

* an elementwise or shape-preserving op (ReLU, batch norm in eval mode, dropout, a residual add,
  a multiply, a concat along channels) with inputs of fields (j, r_k, s_k): unit u of the output
  depends on unit u of every input, so its field is the interval covering all of theirs. The
  jumps must agree (else the field ends); per axis

      lo = min_k (s_k − r_k/2)       hi = max_k (s_k + r_k/2)
      j_out = j      r_out = hi − lo      s_out = (lo + hi)/2

  (for unit u add u·j to lo and hi: the hull of the inputs' intervals. Where they are nested, as
  in ResNet's identity/downsample branches or DenseNet's concatenations, it is the larger one.)
  A 1×1 gate broadcast over the map — squeeze-excitation's sigmoid of a global average — is
  left out of the union and named in a note: through it every unit also depends on the whole
  input, and its 1×1 convs get no row.
* reshapes, permutes and channel splits keep the field on whichever dimensions H and W moved to;
  flattening them (the classifier head) ends the field without a note.

An op whose field no kernel describes (attention, upsampling, an adaptive pool that changes the
size, a functional pool or any op not listed here) ends the field of its output with a note
naming it; conv/pool layers fed only through it get no row rather than a guess. Should the walk
itself fail, the table falls back to forward hooks in execution order, exact for plain chains.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from facecls.io import csv_text
from facecls.models.tracing import trace_modules

KNOWN = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
# Modules that mix positions in a way no kernel arithmetic describes.
UNKNOWN = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
           nn.Upsample, nn.ConvTranspose2d, nn.Fold, nn.Unfold, nn.PixelShuffle, nn.PixelUnshuffle)
ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
COLUMNS = ["label", "layer", "type", "kernel", "stride", "padding", "dilation", "output", "jump", "rf", "start"]

# Modules and ops that act on each position separately (or on the channels at one position): the
# output's field is the union of the inputs'. Batch norm counts: the walk runs in eval mode.
POINTWISE_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.Identity,
                     nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
                     nn.Tanh, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus,
                     nn.Hardtanh, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                     nn.FeatureAlphaDropout, nn.LocalResponseNorm)
LAST_DIM_MODULES = (nn.Linear, nn.LayerNorm)  # act on the last dimension(s) only
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# Ops by name (torch.add, Tensor.add, Tensor.__add__ and F.relu's torch-function name alike).
POINTWISE = {"add", "sub", "rsub", "mul", "div", "true_divide", "neg", "abs", "clamp", "clamp_min", "clamp_max",
             "relu", "relu6", "sigmoid", "tanh", "silu", "gelu", "hardswish", "hardsigmoid", "hardtanh",
             "leaky_relu", "elu", "selu", "celu", "mish", "softplus", "dropout", "dropout1d", "dropout2d",
             "batch_norm", "contiguous", "clone", "detach", "float", "double", "half", "to", "type_as"}
RESHAPES = {"view", "reshape", "flatten", "unsqueeze", "squeeze", "expand_as"}
PERMUTES = {"permute", "transpose", "swapaxes", "swapdims"}
CONCATS = {"cat", "concat", "concatenate"}
SPLITS = {"chunk", "split", "unbind", "tensor_split"}
REDUCTIONS = {"mean", "sum", "amax"}
ADAPTIVE_OPS = {"adaptive_avg_pool2d", "adaptive_max_pool2d"}
LAST_DIM_OPS = {"layer_norm", "linear"}


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def layer_geometry(module: nn.Module, input_size: tuple[int, int] | None = None) -> dict[str, tuple[int, int]]:
    """Kernel, stride, padding and dilation of a conv/pool layer, per axis (H, W). timm's
    ``*Same`` layers pad TensorFlow-style at run time; ``input_size`` gives their padding."""
    kernel = _pair(module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    padding = module.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":  # PyTorch pads total k_eff − 1, the smaller half in front
        padding = tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))
    if type(module).__name__.endswith("Same") and input_size is not None:  # timm: pad_same, front half first
        padding = tuple(max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0) // 2
                        for n, k, s, d in zip(input_size, kernel, _pair(stride), dilation))
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


@dataclass(frozen=True)
class Field:
    """The receptive field of every unit of one tensor, per spatial axis (H, W); ``axes`` are the
    (negative) dimensions of the tensor that hold H and W."""

    jump: tuple
    rf: tuple
    start: tuple
    axes: tuple = (-2, -1)


@dataclass(eq=False)
class Stop:
    """A tensor whose units have no kernel-derived field. ``whole``: each unit sees the whole input
    (a global pool, a flatten); ``quiet``: no note when it only reaches the output (the head)."""

    note: str
    whole: bool = False
    quiet: bool = False
    cut: list[str] = field(default_factory=list)  # conv/pool layers that got no row because of it


def receptive_fields(model: nn.Module, input_size: int | tuple[int, int], in_channels: int = 3) -> FieldTable:
    """Follow the field through ``model`` on an ``input_size`` image; return the table."""
    size = _pair(input_size)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = torch.zeros(1, in_channels, *size, device=device)
    try:
        walk = FieldWalk(model)
        walk.run(example)
        rows, notes = walk.rows, walk.notes()
    except Exception as err:  # noqa: BLE001 — the hook walk raises the model's own error, if any
        rows, notes = hook_walk(model, example)
        notes.append(f"the data-flow walk failed ({_first_line(err)}): the table follows the modules in "
                     "execution order and stops at the first op between them.")
    wider = next((row for row in rows if any(r > n for r, n in zip(row.rf, size))), None)
    if wider is not None:
        notes.append(f"from {wider.label} on, a field ({fmt(wider.rf)}) is larger than the {size[0]}×{size[1]} "
                     "input: part of it lies in the padding.")
    if not rows and not notes:
        notes.append("no conv/pool layers: every unit of the first layer sees the whole input.")
    return FieldTable(size, rows, notes)


def _is_leaf(module: nn.Module) -> bool:
    """Handled as one op: the conv/pool layers (subclasses too) and torch.nn's own modules; any
    other module — or a torch.nn subclass with its own forward — is followed op by op."""
    if isinstance(module, KNOWN):
        return True
    if isinstance(module, CONTAINERS):
        return False
    base = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
    return base is not nn.Module and type(module).forward is base.forward


_DUNDER = {"iadd": "add", "radd": "add", "isub": "sub", "imul": "mul", "rmul": "mul", "truediv": "div",
           "itruediv": "div", "rtruediv": "div", "rdiv": "div", "idiv": "div"}


def _opname(func) -> str:
    """torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__iadd__ → add; F.relu → relu."""
    name = getattr(func, "__name__", "")
    name = name.strip("_") if name.startswith("__") else name.removesuffix("_")
    return _DUNDER.get(name, name)


def tree_leaves(obj) -> list:
    """The items of nested tuples, lists and dicts (a module's or op's arguments and outputs)."""
    if isinstance(obj, (tuple, list)):
        return [leaf for item in obj for leaf in tree_leaves(item)]
    if isinstance(obj, dict):
        return [leaf for item in obj.values() for leaf in tree_leaves(item)]
    return [obj]


def _loudest(carried) -> Stop | None:
    """The first input Stop that will be noted (not a quiet flatten), if any."""
    return next((f for _, f in carried if isinstance(f, Stop) and not f.quiet), None)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:120]


def _num(v: float):
    return int(v) if float(v).is_integer() else v


def _spatial(f: Field, value) -> tuple[int, int] | None:
    if not isinstance(value, torch.Tensor) or value.ndim < -min(f.axes):
        return None
    return tuple(int(value.shape[a]) for a in f.axes)


def _is_spatial(f: Field, ndim: int, dim: int) -> bool:
    return dim % ndim in {a % ndim for a in f.axes}


class FieldWalk(TorchFunctionMode):
    """Runs the model once in eval mode; every tensor gets a Field, a Stop, or nothing (no pixels
    behind it). torch.nn modules are one op each (hooks); inside any other module each torch
    function is one op (this mode)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names = {m: n for n, m in model.named_modules()}
        self.fields = WeakTensorKeyDictionary()
        self.rows: list[FieldRow] = []
        self.stops: list[Stop] = []
        self.reached: set[int] = set()  # ids of the Stops that reach the model's output
        self.gates: list[str] = []
        self.convs = 0
        self.stack: list[nn.Module] = []  # the modules running now, innermost last
        self.leaf_depth = 0  # > 0 inside a module handled as one op
        self.busy = False  # the walk's own tensor calls are no ops of the model
        self.leaves = {m: _is_leaf(m) for m in model.modules()}

    def run(self, example: torch.Tensor) -> None:
        self.fields[example] = Field((1, 1), (1, 1), (0.5, 0.5))  # one input pixel, centred on it
        handles = []
        for m in self.model.modules():
            if m is not self.model:
                handles += [m.register_forward_pre_hook(self._enter),
                            m.register_forward_hook(self._leave, with_kwargs=True)]
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.no_grad(), self:
                out = self.model(example)
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        for t in tree_leaves(out):
            if isinstance(self.get(t), Stop):
                self.reached.add(id(self.fields[t]))

    # — bookkeeping —
    def get(self, t):
        return self.fields.get(t) if isinstance(t, torch.Tensor) else None

    def assign(self, out, f) -> None:
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                if f is None:
                    self.fields.pop(t, None)
                else:
                    self.fields[t] = f

    def _enter(self, module, args):
        self.stack.append(module)
        if self.leaf_depth or self.leaves.get(module, False):
            self.leaf_depth += 1

    def _leave(self, module, args, kwargs, output):
        self.stack.pop()
        if self.leaf_depth:
            self.leaf_depth -= 1
            if self.leaf_depth == 0:
                self.busy = True
                try:
                    self.assign(output, self.module_field(module, (args, kwargs), output))
                finally:
                    self.busy = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.busy or self.leaf_depth:
            return out
        self.busy = True
        try:
            name = _opname(func)
            if name == "setitem":  # an in-place write into a tensor
                target = args[0] if args and isinstance(args[0], torch.Tensor) else None
                if target is not None and any(self.get(t) is not None for t in tree_leaves(args)):
                    self.fields[target] = self.unknown("setitem", "an in-place write")
            else:
                self.assign(out, self.op_field(name, args, kwargs, out))
        finally:
            self.busy = False
        return out

    def qualname(self, op: str) -> str:
        where = self.names.get(self.stack[-1], "") if self.stack else ""
        return f"{where}.{op}" if where else op

    def stop(self, note: str, whole: bool = False, quiet: bool = False) -> Stop:
        s = Stop(note, whole, quiet)
        self.stops.append(s)
        return s

    def unknown(self, name: str, what: str | None = None) -> Stop:
        what = f" ({what})" if what and name.rsplit(".", 1)[-1] != what else ""
        return self.stop(f"stopped at {name}{what}: its receptive field does not follow from a kernel; "
                         "every later unit may see the whole input.")

    def notes(self) -> list[str]:
        notes = []
        for s in self.stops:
            if s.cut:
                more = f" and {len(s.cut) - 1} later conv/pool layers" if len(s.cut) > 1 else ""
                notes.append(f"{s.note} No row for {s.cut[0]}{more}.")
            elif id(s) in self.reached and not s.quiet:
                notes.append(s.note)
        if self.gates:
            notes.append(f"{len(self.gates)} squeeze-excitation gate(s) (first: {self.gates[0]}) multiply a map by "
                         "a 1×1 summary of the whole map: the fields follow the conv/pool path, and the gates' "
                         "1×1 convs get no row; through a gate every unit also depends on the whole input.")
        return notes

    def carried(self, inputs) -> list[tuple[torch.Tensor, Field | Stop]]:
        return [(t, self.get(t)) for t in tree_leaves(inputs) if self.get(t) is not None]

    # — modules —
    def module_field(self, m: nn.Module, inputs, value):
        carried = self.carried(inputs)
        if not carried or not any(isinstance(t, torch.Tensor) for t in tree_leaves(value)):
            return None
        name, kind = self.names.get(m, "?"), type(m).__name__
        source, f = carried[0]
        if isinstance(m, KNOWN):
            if isinstance(f, Stop):
                if not (f.whole and tuple(source.shape[-2:]) == (1, 1)):  # no gate's 1×1 conv
                    f.cut.append(name)
                return f
            if f.axes != (-2, -1) or len(carried) != 1:
                return self.unknown(name, kind)
            return self.row(name, m, f, source, value)
        if isinstance(m, POINTWISE_MODULES):
            return self.union(name, carried, value)
        if isinstance(f, Stop):
            return f if not (f.quiet and isinstance(m, UNKNOWN)) else self.unknown(name, kind)
        if isinstance(m, ADAPTIVE):
            spatial_in, spatial_out = _spatial(f, source), _spatial(f, value)
            if spatial_in == spatial_out:
                return f  # keeps the size: every unit is itself
            stop = self.unknown(name, kind)
            stop.whole = spatial_out == (1, 1)
            return stop
        if isinstance(m, nn.Flatten):
            return self.reshape(name, f, source, value)
        if isinstance(m, LAST_DIM_MODULES):
            last = len(m.normalized_shape) if isinstance(m, nn.LayerNorm) else 1
            return self.last_dims(name, kind, f, source, last)
        if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
            return self.pad(name, kind, f, m.padding)
        return self.unknown(name, kind)

    def row(self, name: str, m: nn.Module, f: Field, source: torch.Tensor, value: torch.Tensor) -> Field:
        g = layer_geometry(m, _spatial(f, source))
        k_eff = tuple(d * (k - 1) + 1 for k, d in zip(g["kernel"], g["dilation"]))
        start = tuple(s + ((ke - 1) / 2 - p) * j for s, ke, p, j in zip(f.start, k_eff, g["padding"], f.jump))
        rf = tuple(r + (ke - 1) * j for r, ke, j in zip(f.rf, k_eff, f.jump))
        jump = tuple(j * s for j, s in zip(f.jump, g["stride"]))
        if isinstance(m, nn.Conv2d):
            self.convs += 1
        label = f"conv{self.convs}" if isinstance(m, nn.Conv2d) else f"pool{self.convs}"
        self.rows.append(FieldRow(label, name, type(m).__name__, g["kernel"], g["stride"], g["padding"],
                                  g["dilation"], tuple(int(v) for v in value.shape[-2:]), jump, rf, start))
        return Field(jump, rf, start)

    # — functional ops —
    def op_field(self, op: str, args, kwargs, value):
        if not any(isinstance(t, torch.Tensor) for t in tree_leaves(value)):
            return None  # a shape, a count, a flag: no pixels behind it
        carried = self.carried((args, kwargs))
        if not carried:
            return None  # a constant
        name = self.qualname(op)
        if op in POINTWISE:
            return self.union(name, carried, value)
        source, f = carried[0]
        if op == "getitem":
            return self.getitem(name, f, source, args[1], value)
        structural = op in RESHAPES | PERMUTES | CONCATS | SPLITS | REDUCTIONS | ADAPTIVE_OPS | LAST_DIM_OPS
        if isinstance(f, Stop):
            if structural:
                return _loudest(carried) or f
            return _loudest(carried) or (f if not f.quiet else self.unknown(name, op))
        out = next(t for t in tree_leaves(value) if isinstance(t, torch.Tensor))

        def arg(i: int, key: str, default=None):  # an argument given by position or by name
            return kwargs.get(key, args[i] if len(args) > i else default)

        if op in RESHAPES:
            return self.reshape(name, f, source, out)
        if op in PERMUTES:
            return self.permute(op, f, source, args[1:] or tuple(kwargs.values()))
        if op in CONCATS:
            return self.union(name, carried, out, along=arg(1, "dim", 0))
        if op in SPLITS:
            dim = arg(1, "dim", 0) if op == "unbind" else arg(2, "dim", 0)
            return f if not _is_spatial(f, source.ndim, dim) else self.unknown(name, f"{op} along a spatial axis")
        if op in LAST_DIM_OPS:
            return self.last_dims(name, op, f, source, len(arg(1, "normalized_shape")) if op == "layer_norm" else 1)
        if op in REDUCTIONS or op in ADAPTIVE_OPS:
            return self.global_pool(name, op, f, source, out, arg(1, "dim"))
        if op == "pad" and len(carried) == 1:
            return self.pad(name, op, f, arg(1, "pad"))
        spatial_in, spatial_out = _spatial(f, source), _spatial(f, out)
        if spatial_out is not None and spatial_in != spatial_out:
            return self.stop(f"stopped at {name}: the feature map changed from {spatial_in} to {spatial_out} "
                             "outside any module (a functional call in forward).")
        return self.unknown(name, op)

    def union(self, name: str, carried, value, along: int | None = None):
        """The field covering every input's (see the module docstring); a broadcast 1×1 gate of
        globally pooled values is left out and noted."""
        out = next(t for t in tree_leaves(value) if isinstance(t, torch.Tensor))
        fields = [(t, f) for t, f in carried if isinstance(f, Field)]
        if not fields:
            return _loudest(carried) or carried[0][1]  # only Stops: one carries on, a noted one first
        first = fields[0][1]
        if along is not None and _is_spatial(first, out.ndim, along):
            return self.unknown(name, "a concat along a spatial axis")
        size = _spatial(first, out)
        gate = False
        for t, f in carried:
            if isinstance(f, Stop):
                if f.whole and along is None and _spatial(first, t) in ((1, 1), None):
                    gate = True  # a 1×1 summary broadcast over the map
                    continue
                return f
        if any(f.axes != first.axes or (along is None and _spatial(f, t) != size) for t, f in fields):
            return self.unknown(name, "maps of different sizes")
        if any(f.jump != first.jump for _, f in fields):
            return self.unknown(name, "maps at different strides")
        if gate:
            self.gates.append(name)
        lo = tuple(min(f.start[i] - f.rf[i] / 2 for _, f in fields) for i in range(2))
        hi = tuple(max(f.start[i] + f.rf[i] / 2 for _, f in fields) for i in range(2))
        return Field(first.jump, tuple(_num(h - lo_) for lo_, h in zip(lo, hi)),
                     tuple(_num((lo_ + h) / 2) for lo_, h in zip(lo, hi)), first.axes)

    def getitem(self, name: str, f, source: torch.Tensor, index, value):
        if isinstance(f, Stop):
            return f
        index = index if isinstance(index, tuple) else (index,)
        leading = source.ndim + min(f.axes)  # dimensions in front of the spatial ones
        if all(isinstance(i, (int, slice)) for i in index) and len(index) <= leading:
            return f  # picks channels (or samples): the positions stay
        return self.unknown(name, "indexing across a spatial axis")

    def reshape(self, name: str, f: Field, source: torch.Tensor, value: torch.Tensor):
        """A row-major reshape keeps each position's place when the dimensions from H on are unchanged."""
        trailing = tuple(source.shape[min(f.axes):])
        if value.ndim >= len(trailing) and tuple(value.shape[value.ndim - len(trailing):]) == trailing:
            return f
        return self.stop(f"stopped at {name}: it merges or splits the spatial axes.", whole=True, quiet=True)

    @staticmethod
    def permute(op: str, f: Field, source: torch.Tensor, rest) -> Field:
        ndim = source.ndim
        rest = list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else list(rest)
        order = list(range(ndim))
        if op == "permute":
            order = [d % ndim for d in rest]
        else:
            a, b = rest[0] % ndim, rest[1] % ndim
            order[a], order[b] = order[b], order[a]
        return Field(f.jump, f.rf, f.start, tuple(order.index(a % ndim) - ndim for a in f.axes))

    def last_dims(self, name: str, kind: str, f: Field, source: torch.Tensor, count: int):
        """A Linear or LayerNorm over the last ``count`` dimensions: each position on its own
        unless H or W is among them."""
        if not any(_is_spatial(f, source.ndim, -1 - i) for i in range(count)):
            return f
        return self.unknown(name, kind)

    def pad(self, name: str, kind: str, f: Field, padding):
        """Padding (F.pad's order: last dimension first, front then back) moves the first unit
        back by the front pad of H and of W."""
        padding = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
        fronts = []
        for axis in f.axes:
            k = -axis - 1  # F.pad's pair for this dimension
            fronts.append(padding[2 * k] if 2 * k < len(padding) else 0)
        if not all(isinstance(p, int) and p >= 0 for p in padding):
            return self.unknown(name, kind)
        start = tuple(_num(s - p * j) for s, p, j in zip(f.start, fronts, f.jump))
        return Field(f.jump, f.rf, start, f.axes)

    def global_pool(self, name: str, op: str, f: Field, source: torch.Tensor, value: torch.Tensor, dims):
        """mean/sum/amax over dimensions, or a functional adaptive pool."""
        spatial = {a % source.ndim for a in f.axes}
        if op in ADAPTIVE_OPS:
            out = _spatial(f, value)
            if out == _spatial(f, source):
                return f
            if out != (1, 1):
                return self.unknown(name, op)
        else:
            dims = set(range(source.ndim)) if dims is None else {
                d % source.ndim for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
            if not dims & spatial:  # over channels only: each position on its own
                keep = value.ndim == source.ndim
                axes = tuple(a - (0 if keep else sum(d < a for d in dims)) - value.ndim for a in sorted(spatial))
                return Field(f.jump, f.rf, f.start, axes if f.axes[0] < f.axes[1] else axes[::-1])
            if not spatial <= dims:
                return self.unknown(name, f"{op} over one spatial axis")
        stop = self.unknown(name, op)
        stop.whole = True
        return stop


def hook_walk(model: nn.Module, example: torch.Tensor) -> tuple[list[FieldRow], list[str]]:
    """The conv/pool modules in execution order (forward hooks): exact for a plain chain, and
    stops at the first change of size between modules."""
    calls = trace_modules(model, example)
    jump, rf, start = (1, 1), (1, 1), (0.5, 0.5)  # field of one input pixel, centred on it
    current = tuple(example.shape[-2:])  # spatial size the next known layer should see
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
    return rows, notes


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
