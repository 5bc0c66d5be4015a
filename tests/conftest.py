"""Shared fixtures: tiny datasets written inside the tests, the CLI environment, and the
composed `train` config. Plain helpers (run_cli, read_json, …) are in helpers.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cli_env, compose_tiny_train


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """A 3-class ImageFolder of synthetic faces, 12 images per class, 32×32 JPEGs."""
    from facecls.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("data") / "faces"
    write_dataset(root, num_classes=3, images_per_class=12, image_size=32, seed=0, progress=False)
    return root


@pytest.fixture
def no_downloads(tmp_path, monkeypatch) -> Path:
    """Empty torchvision and Hugging Face caches and FACECLS_OFFLINE=1: no test may fetch weights
    (nothing can be downloaded here, and a network elsewhere must not change what a test sees).
    Returns the empty TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("FACECLS_OFFLINE", "1")
    return tmp_path / "torch-home"


@pytest.fixture
def cache_env(tmp_path) -> dict:
    """Environment for CLI subprocesses: a private cache dir, no GPU."""
    return cli_env(tmp_path / "cache")


@pytest.fixture
def cfg_train(tiny_faces, tmp_path):
    """The `train` config `facecls train` would run on tiny_faces with the TINY settings and
    a private cache dir, composed in-process (no subprocess, no Hydra run dir). Each test
    gets its own copy: change it freely, or compose with more overrides via compose_train."""
    return compose_tiny_train(tiny_faces, tmp_path / "cache")


@pytest.fixture
def compose_train(tiny_faces, tmp_path):
    """compose_train(*overrides): cfg_train's config with more overrides on top."""
    return lambda *overrides: compose_tiny_train(tiny_faces, tmp_path / "cache", *overrides)

