"""Writers of the two export formats. Both take the model behind its normalisation
(facecls.inference.runners.NormalisedModel) in eval mode, give it a dynamic batch axis and
embed the model's description (ModelInfo as JSON) so the file alone can be served.

* ONNX: torch's TorchScript-based exporter by default (under a second for a ResNet-18; the
  torch.export-based one, ``dynamo=true``, took ~11 s on the same model and needs onnxscript),
  ModelInfo in the model's ``metadata_props`` under ``facecls``, checked with ``onnx.checker``.
* TorchScript: ``torch.jit.trace`` (facecls models have no data-dependent control flow), ModelInfo
  as the archive's extra file ``facecls.json``.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from facecls.errors import UserError
from facecls.inference.model_info import ModelInfo
from facecls.inference.runners import EXTRA_FILE, METADATA_KEY

INPUT_NAME = "images"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def unsupported_op(err: Exception) -> str:
    """The operator an exporter could not translate, read from its message (else the message)."""
    text = str(err)
    found = re.search(r"operator '?([\w:.]+)'?", text) or re.search(r"(aten::\w+|aten\.\w+)", text)
    return found.group(1) if found else (text.strip().splitlines() or [type(err).__name__])[0][:160]


def write_onnx(module: nn.Module, info: ModelInfo, path: Path, opset: int | None = None,
               dynamo: bool = False) -> Path:
    """``module`` (uint8 images → output) as an ONNX file at ``path``, validated by onnx.checker."""
    try:
        import onnx
    except ImportError:
        raise UserError("format=onnx needs the onnx extra — pip install 'facecls[onnx]'.") from None
    example = (torch.zeros(2, 3, info.input_size, info.input_size, dtype=torch.uint8),)
    output = info.output
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, tracer chatter
            if dynamo:
                program = torch.onnx.export(module, example, dynamo=True, input_names=[INPUT_NAME],
                                            output_names=[output], opset_version=opset,
                                            dynamic_shapes=({0: torch.export.Dim("batch")},))
                proto = program.model_proto
            else:
                torch.onnx.export(module, example, buffer, dynamo=False, input_names=[INPUT_NAME],
                                  output_names=[output], opset_version=opset or 17,
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, output: {0: "batch"}})
                proto = onnx.load_from_string(buffer.getvalue())
    except Exception as err:  # the exporters raise many types; the op is what the user needs
        name = info.extra.get("model", {}).get("name") or info.extra.get("model", {}).get("_target_", "the model")
        raise UserError(f"{name} cannot be exported to ONNX: {unsupported_op(err)} has no ONNX translation "
                        "— use format=torchscript.") from None
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    proto.producer_name = "facecls"
    onnx.checker.check_model(proto, full_check=True)
    tmp = _temporary(path)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def write_torchscript(module: nn.Module, info: ModelInfo, path: Path) -> Path:
    """``module`` traced to TorchScript at ``path`` with ModelInfo as the extra file facecls.json."""
    example = torch.zeros(2, 3, info.input_size, info.input_size, dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
    except Exception as err:
        raise UserError(f"the model cannot be traced to TorchScript: {unsupported_op(err)} — use format=onnx.") \
            from None
    tmp = _temporary(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice (torch ≥ 2.9)
        torch.jit.save(traced, str(tmp), _extra_files={EXTRA_FILE: info.to_json()})
    os.replace(tmp, path)
    return path


# format= → (writer, default file name)
FORMATS = {
    "onnx": (write_onnx, "model.onnx"),
    "torchscript": (write_torchscript, "model.torchscript.pt"),
}
