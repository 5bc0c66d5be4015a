"""Batched train-time augmentation: every image of a batch gets its own random parameters.

torchvision.transforms.v2 draws ONE set of random parameters per call, so facecls used to
call it once per image — hundreds of tiny operations per batch, slow on a CPU and slower
still when other processes share the cores. The classes here take the whole batch
(N×C×H×W float in [0, 1], on any device) and draw N sets of parameters at once, then apply
them in a few vectorised calls: a flip mask, per-sample affine matrices through ONE
``affine_grid`` + ``grid_sample``, per-sample colour factors as 3×3 colour matrices (one
batched matmul per colour step).

They keep the meaning of torchvision's parameters (``conf/aug/basic.yaml`` reads as the v2
recipe did) and reproduce its formulas: the same parameter distributions, the same affine
matrix (angle, whole-pixel translation, scale and shear about the image centre), the same
colour blends with a random order of the colour steps per image. Differences: values stay
float (v2 on uint8 rounds after every step) and a bilinear warp with ``fill=0`` pads with
zeros (v2 additionally multiplies the border pixels by their coverage).

Random numbers: parameters are drawn on the CPU from torch's global generator — the one
facecls seeds from ``seed`` and saves/restores with a checkpoint — and then copied to the
batch's device, so a run repeats exactly from its seed and resumes exactly, on CPU and
CUDA alike. (Only ``RandomErasing(value="random")`` draws its noise on the device.)

Each transform has ``sample(n, height, width)`` → a dict of CPU tensors (one row per image)
and ``apply(x, params)``; ``forward(x)`` is ``apply(x, sample(...))``.
"""
from facecls.data.augment.auto import TrivialAugment
from facecls.data.augment.base import BatchTransform, Compose, affine_theta, warp
from facecls.data.augment.colour import ColorJitter
from facecls.data.augment.geometry import RandomAffine, RandomErasing, RandomHorizontalFlip

__all__ = ["BATCHED_VERSIONS", "BatchTransform", "ColorJitter", "Compose", "RandomAffine", "RandomErasing",
           "RandomHorizontalFlip", "TrivialAugment", "affine_theta", "warp"]

# The torchvision.transforms.v2 classes that have a batched version here (for the log line).
BATCHED_VERSIONS = {
    "RandomHorizontalFlip": "RandomHorizontalFlip",
    "RandomAffine": "RandomAffine",
    "ColorJitter": "ColorJitter (no hue)",
    "RandomErasing": "RandomErasing",
    "TrivialAugmentWide": "TrivialAugment",
}
