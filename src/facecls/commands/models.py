"""`facecls models`: the torchvision backbones model=feature_extractor|finetune accept (name,
parameters, weights, input size); `facecls models name=resnet18`: the nodes model.cut and
model.freeze accept, each with its output shape at the weights' input size (or input_size=).
`source=timm` does the same for timm's models (`filter='convnext*'` narrows the list)."""
from __future__ import annotations

from omegaconf import DictConfig

from facecls.config.task import reports_user_errors
from facecls.errors import UserError

# Without a filter, timm's list (~1,400 names) is cut to this many rows.
TIMM_ROWS = 50


def _print_timm(rows, pattern) -> None:
    if not rows:
        raise UserError(f"no timm model matches filter='{pattern}' — try a wider one, e.g. filter='convnext*'.")
    shown = rows if pattern else rows[:TIMM_ROWS]
    width = max(len(b.name) for b in shown)
    print(f"{'name'.ljust(width)}  input  weights tags (DEFAULT = …)")
    for b in shown:
        tags = ", ".join(w for w in b.weights if w != "DEFAULT") or "— (model.weights=null only)"
        default = f" (DEFAULT = {b.default})" if b.default else ""
        print(f"{b.name.ljust(width)}  {b.input_size:>5}  {tags}{default}")
    if len(shown) < len(rows):
        print(f"… and {len(rows) - len(shown)} more: narrow the list with filter='convnext*' (shell-style)")
    print("\nnodes of one: facecls models source=timm name=NAME; use it: facecls train model=feature_extractor "
          "model.source=timm model.name=NAME")


@reports_user_errors
def main(cfg: DictConfig):
    from facecls.models.backbones import source_of
    from facecls.models.catalog import backbones, node_shapes, timm_backbones

    source = cfg.get("source") or "torchvision"
    pattern = cfg.get("filter")
    timm = source_of(source) is not None
    if cfg.name is None and timm:
        rows = timm_backbones(str(pattern) if pattern else None)
        _print_timm(rows, pattern)
        return rows
    if cfg.name is None:
        rows = backbones()
        if pattern:
            from fnmatch import fnmatch

            rows = [b for b in rows if fnmatch(b.name, str(pattern))]
            if not rows:
                raise UserError(f"no torchvision model matches filter='{pattern}' — try a wider one, e.g. "
                                "filter='resnet*'.")
        width = max(len(b.name) for b in rows)
        print(f"{'name'.ljust(width)}  {'params':>8}  input  weights (DEFAULT = …)")
        for b in rows:
            names = ", ".join(w for w in b.weights if w != "DEFAULT")
            print(f"{b.name.ljust(width)}  {b.params / 1e6:7.1f}M  {b.input_size:>5}  {names} (DEFAULT = {b.default})")
        print("\nnodes of one: facecls models name=NAME; use it: facecls train model=feature_extractor model.name=NAME")
        return rows
    rows = node_shapes(str(cfg.name), cfg.weights, cfg.input_size, source)
    width = max(len(n) for n, _ in rows)
    print(f"{'node (model.cut / model.freeze)'.ljust(width)}  output")
    for node, shape in rows:
        print(f"{node.ljust(width)}  {shape}")
    print("\nplus model.cut=penultimate (the classifier's input); shapes at the weights' input size or input_size=")
    return rows
