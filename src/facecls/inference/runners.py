"""One interface over every form a trained model takes: a facecls checkpoint (PyTorch), an ONNX
file (ONNX Runtime) and a TorchScript file. Each takes uint8 RGB images N×3×S×S — exactly the
pixels facecls.data.decode makes — and returns float32 logits (or embeddings), so predict and
serve do not care which one they hold.

The normalisation is part of the model (:class:`NormalisedModel`): the exported graphs carry it,
so a caller in another language only resizes to the input size and hands over bytes.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.inference.checkpoint import load_checkpoint
from facecls.inference.loading import rebuild_model, run_dir_of
from facecls.inference.model_info import ModelInfo, describe_checkpoint

# Where an export keeps its ModelInfo: an ONNX metadata_props key / a TorchScript extra file.
METADATA_KEY = "facecls"
EXTRA_FILE = "facecls.json"


class NormalisedModel(nn.Module):
    """``model`` behind its input normalisation: uint8 N×3×S×S in, the model's output out.
    The arithmetic is facecls.data.batches.BatchPreparer's (x·scale − shift), so the logits
    equal those of training's evaluation bit for bit."""

    def __init__(self, model: nn.Module, prep: Preprocess):
        super().__init__()
        self.model = model
        mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float() * self.scale - self.shift)


class Runner:
    """uint8 images N×3×S×S (torch) → float32 N×K (torch, CPU). ``info`` describes the model;
    ``kind`` names the engine (pytorch, onnxruntime, torchscript); ``source`` the file."""

    kind = "?"

    def __init__(self, info: ModelInfo, source: Path):
        self.info = info
        self.source = source

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchRunner(Runner):
    """A module on a torch device (the checkpoint's model, or a loaded TorchScript file)."""

    kind = "pytorch"

    def __init__(self, module: nn.Module, info: ModelInfo, source: Path, device: torch.device):
        super().__init__(info, source)
        self.module = module.to(device).eval()
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(images.to(self.device)).float().cpu()


class ScriptRunner(TorchRunner):
    kind = "torchscript"


class OnnxRunner(Runner):
    """An ONNX file in an ONNX Runtime session (CPU; CUDA when onnxruntime-gpu has it and
    ``device`` is cuda). ``threads``: the session's intra-op threads (None: its default)."""

    kind = "onnxruntime"

    def __init__(self, path: Path, device: torch.device, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("running an ONNX model needs onnxruntime — pip install 'facecls[onnx]'.") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        # idle threads sleep instead of spinning: on shared cores (and beside a web server's own
        # threads) spinning workers take the CPU the others need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise UserError(f"'{path}' is not a readable ONNX model ({one_line_of(err)}) — pass a file "
                            "written by facecls export format=onnx.") from None
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise UserError(f"'{path}' carries no facecls metadata (classes, preprocessing) — export it with "
                            "facecls export format=onnx.")
        super().__init__(ModelInfo.from_dict(json.loads(text)), path)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.cpu().numpy(), dtype=np.uint8)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0]).float()


def one_line_of(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive holds code/ (a torch.save checkpoint holds data.pkl only)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_torchscript(path: Path, device: torch.device) -> ScriptRunner:
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice (torch ≥ 2.9)
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    if not extra[EXTRA_FILE]:
        raise UserError(f"'{path}' is a TorchScript file without facecls metadata — export it with "
                        "facecls export format=torchscript.")
    return ScriptRunner(module, ModelInfo.from_dict(json.loads(extra[EXTRA_FILE])), path, device)


def checkpoint_runner(path: Path, device: torch.device, far: float | None = None) -> TorchRunner:
    """The checkpoint's model behind its normalisation, fp32, in eval mode; an embedding model's
    threshold is the one facecls verify chose for ``far`` (model_info.verification_threshold)."""
    ckpt = load_checkpoint(path)
    model = rebuild_model(ckpt, len(ckpt.classes), source=str(path))
    info = describe_checkpoint(ckpt, path, run_dir_of(path), far)
    return TorchRunner(NormalisedModel(model, ckpt.preprocessing()), info, path, device)


def open_runner(path: str | os.PathLike, device: torch.device | str = "cpu", threads: int | None = None,
                far: float | None = None) -> Runner:
    """The runner for ``path``: ``.onnx`` → ONNX Runtime, a TorchScript archive → TorchScript,
    anything else → a facecls checkpoint (``far``: see :func:`checkpoint_runner`; an exported
    file carries the threshold chosen at export)."""
    path = Path(path).expanduser()
    device = torch.device(device)
    if not path.is_file():
        raise UserError(f"model file '{path}' does not exist — pass a checkpoint (checkpoints/best.pt) or a "
                        "file written by facecls export.")
    if path.suffix.lower() == ".onnx":
        return OnnxRunner(path, device, threads)
    if is_torchscript(path):
        return load_torchscript(path, device)
    return checkpoint_runner(path, device, far)
