"""facecls: a config-driven experiment runner for image (face) classification."""

__version__ = "0.1.0"
