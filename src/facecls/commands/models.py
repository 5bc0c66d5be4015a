"""`facecls models`: the torchvision backbones model=feature_extractor|finetune accept (name,
parameters, weights, input size); `facecls models name=resnet18`: the nodes model.cut and
model.freeze accept, each with its output shape at the weights' input size (or input_size=)."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.errors import reports_user_errors


@reports_user_errors
def main(cfg: DictConfig):
    from facecls.models.catalog import backbones, node_shapes

    if cfg.name is None:
        rows = backbones()
        width = max(len(b.name) for b in rows)
        print(f"{'name'.ljust(width)}  {'params':>8}  input  weights (DEFAULT = …)")
        for b in rows:
            names = ", ".join(w for w in b.weights if w != "DEFAULT")
            print(f"{b.name.ljust(width)}  {b.params / 1e6:7.1f}M  {b.input_size:>5}  {names} (DEFAULT = {b.default})")
        print("\nnodes of one: facecls models name=NAME; use it: facecls train model=feature_extractor model.name=NAME")
        return rows
    rows = node_shapes(str(cfg.name), cfg.weights, cfg.input_size)
    width = max(len(n) for n, _ in rows)
    print(f"{'node (model.cut / model.freeze)'.ljust(width)}  output")
    for node, shape in rows:
        print(f"{node.ljust(width)}  {shape}")
    print("\nplus model.cut=penultimate (the classifier's input); shapes at the weights' input size or input_size=")
    return rows
