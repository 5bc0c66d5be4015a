"""`facecls <command> [hydra overrides]` — dispatch to the command's @hydra.main.

Every command is a Hydra app with its own primary config in ``conf/<command>.yaml``, so
``--help``, ``--cfg job``, ``-m`` and shell completion behave as Hydra users expect.
Heavy modules (torch, matplotlib) are imported by the command, never here, so a typo is
reported quickly.
"""
from __future__ import annotations

import importlib
import os
import sys

from facecls.config.compose import config_dir, register_resolvers

# command -> (module with a `main(cfg)` task function, primary config name)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("facecls.commands.train", "train"),
    "eval": ("facecls.commands.eval", "eval"),
    "predict": ("facecls.commands.predict", "predict"),
    "make-data": ("facecls.commands.make_data", "make_data"),
    "rf": ("facecls.commands.rf", "rf"),
    "visualize": ("facecls.commands.visualize", "visualize"),
    "robustness": ("facecls.commands.robustness", "robustness"),
    "summarize": ("facecls.commands.summarize", "summarize"),
    "report": ("facecls.commands.report", "report"),
    "models": ("facecls.commands.models", "models"),
}

USAGE = """usage: facecls <command> [overrides] [hydra options]

commands:
  train       train a model (default: ConvNet on the built-in synthetic faces)
  eval        score a checkpoint on val and test: facecls eval ckpt=PATH
  predict     classify new images: facecls predict ckpt=PATH input=FILE_OR_DIR
  make-data   write a dataset to disk: facecls make-data synthetic out=DIR
  rf          receptive field of each conv/pool layer: facecls rf model=convnet
  visualize   look inside a trained model: facecls visualize weights|predictions|attribution ckpt=PATH
  robustness  accuracy under data variations (blur, rotation, …): facecls robustness ckpt=PATH
  summarize   compare runs (a sweep): table + plots: facecls summarize outputs/multirun/<date>/<time>_<id>
  report      run every experiment of the course report, write report.md: facecls report out=DIR
  models      torchvision backbones for model=feature_extractor|finetune; their nodes: facecls models name=resnet18

`facecls <command> --help` lists its config groups and options."""


def leading_args_as_list(args: list[str], key: str) -> list[str]:
    """Plain leading arguments (no `=`, no `-`) → one quoted list override ``key=['a','b']``
    (quoted, so paths with commas or spaces parse)."""
    count = 0
    while count < len(args) and "=" not in args[count] and not args[count].startswith("-"):
        count += 1
    if not count:
        return args
    quoted = ",".join("'" + a.replace("'", "\\'") + "'" for a in args[:count])
    return [f"{key}=[{quoted}]", *args[count:]]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from facecls.config.task import failed_jobs

    failed_jobs.clear()  # main() may run several commands in one process (facecls report)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        from facecls.errors import exit_with

        exit_with(f"unknown command '{command}' — choose one of: {', '.join(COMMANDS)}.")
    module_name, config_name = COMMANDS[command]
    if command in ("make-data", "visualize") and rest and "=" not in rest[0] and not rest[0].startswith("-"):
        rest[0] = f"kind={rest[0]}"  # `facecls make-data synthetic out=…`, `facecls visualize weights …`

    if command == "summarize":
        rest = leading_args_as_list(rest, "dirs")  # `facecls summarize A B` → dirs=['A','B']
    if command == "train":
        from facecls.config.args import expand_resume_args

        rest = expand_resume_args(rest)
    if command == "train" and os.environ.get("RANK", "0") != "0":
        from facecls.config.args import worker_rank_args

        rest = worker_rank_args(rest)  # torchrun: only rank 0 writes the run dir
    from facecls.config.overrides import check_output_dir, check_overrides

    check_overrides(config_dir(), config_name, rest)
    if command == "train":
        check_output_dir(rest)
    register_resolvers()

    import hydra

    task = importlib.import_module(module_name).main
    app = hydra.main(config_path=config_dir(), config_name=config_name, version_base="1.3")(task)
    sys.argv = [f"facecls {command}", *rest]
    app()

    if failed_jobs:
        sys.stderr.write(f"facecls: {len(failed_jobs)} job(s) failed; see the lines above.\n")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
