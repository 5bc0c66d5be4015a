"""Training: run assembly (``build_run``), THE loop (``engine.fit``), checkpoints and resume
state, what a run leaves behind, DDP, graceful stop, device/precision/seeding."""
