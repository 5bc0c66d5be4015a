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
from facecls.timing import CLOCK

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
    "export": ("facecls.commands.export", "export"),
    "serve": ("facecls.commands.serve", "serve"),
    "verify": ("facecls.commands.verify", "verify"),
    "enroll": ("facecls.commands.enroll", "enroll"),
    "identify": ("facecls.commands.identify", "identify"),
    "lr-find": ("facecls.commands.lr_find", "lr_find"),
    "suspects": ("facecls.commands.suspects", "suspects"),
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
  export      a checkpoint as ONNX or TorchScript (parity-checked): facecls export ckpt=PATH format=onnx
  serve       an HTTP API and a page for a model: facecls serve model=PATH (checkpoint, .onnx or TorchScript)
  verify      face verification (LFW protocol): facecls verify ckpt=PATH pairs=auto|pairs.txt
  enroll      a gallery of people (one folder each): facecls enroll ckpt=PATH gallery=DIR out=FILE
  identify    who is in each photo, or unknown: facecls identify gallery=FILE input=FILE_OR_DIR far=1e-3
  models      torchvision backbones for model=feature_extractor|finetune; their nodes: facecls models name=resnet18
  lr-find     the learning-rate range test, suggests optim.lr: facecls lr-find [train overrides]
  suspects    likely mislabelled images from a k-fold sweep: facecls suspects outputs/multirun/<date>/<time>

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


def lock_run_dir(args: list[str]) -> None:
    """Two `facecls train` into one named run dir (hydra.run.dir=…, resume=…) would both write
    train.log and .hydra/: the run dir is claimed before Hydra writes anything in it. Default run
    dirs carry a random id, a sweep's jobs their number; torchrun's other ranks share rank 0's."""
    from facecls.config.overrides import run_dir_target
    from facecls.errors import UserError, exit_with
    from facecls.io import lock_dir

    named = any(a.lstrip("+").startswith("hydra.run.dir=") for a in args)
    if not named or "-m" in args or "--multirun" in args or os.environ.get("RANK", "0") != "0":
        return
    target = run_dir_target(args)
    if "${" not in target:
        try:
            lock_dir(target, fix="choose another run dir (hydra.run.dir=…)")
        except UserError as err:
            exit_with(str(err))


# Config groups whose files may set hydra.mode (conf/experiment/*: MULTIRUN); tests/test_startup.py keeps it true.
MODE_GROUPS = ("experiment", "hparams_search", "hydra")


def compose_once(args: list[str]) -> None:
    """Hydra composes a command's whole config twice: once (``Hydra.get_mode``) only to read
    ``hydra.mode``, then to run it (≈0.6 s each here). Only the groups in MODE_GROUPS set
    ``hydra.mode``, so when no argument names one (nor another config dir or name), the mode is
    what it would read: unset, i.e. ``-m`` decides — and the first composition is skipped."""
    from hydra._internal.hydra import Hydra

    def names_mode(arg: str) -> bool:
        if arg.startswith("-"):
            return arg not in ("-m", "--multirun")  # --config-dir, --config-name, …: anything may set it
        key = arg.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
        if key.startswith("hydra.") and not key.startswith("hydra.mode"):
            return False  # hydra.run.dir=…, hydra.sweep.dir=…: plain values, not the mode
        return key.split(".", 1)[0].split("/", 1)[0] in MODE_GROUPS
    if not hasattr(Hydra, "_facecls_get_mode"):
        Hydra._facecls_get_mode = Hydra.get_mode  # Hydra's own, for arguments that may set the mode
    original = Hydra._facecls_get_mode
    if any(names_mode(a) for a in args):
        Hydra.get_mode = original
    else:
        Hydra.get_mode = lambda self, config_name, overrides: None


def main(argv: list[str] | None = None) -> None:
    """The console script: every printed name survives (safe_text_streams) and a closed stdout
    (`facecls … | head -1`) ends quietly instead of in a BrokenPipeError traceback. Without
    ``argv`` (the console script, `python -m facecls`) the process ends with the command:
    :func:`leave` then skips the interpreter's teardown of every module."""
    if argv is None:
        try:
            _main(None)
        except SystemExit as stop:
            leave(stop.code)
        leave(0)
    _main(argv)


def leave(code: int | str | None) -> None:
    """End the process as ``SystemExit(code)`` would, without tearing down torch's and every other
    module's objects one by one (≈1 s of CPU after every run): the atexit handlers still run
    (trackers, logging, thread pools), the streams are flushed, then the process exits."""
    import atexit
    import threading

    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    # In the interpreter's own order: first join the non-daemon threads and run threading's exit hooks
    # (they stop thread pools and joblib/loky's workers — without them a joblib sweep waited 300 s for its
    # idle workers), then the atexit handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    os._exit(code or 0)


def _main(argv: list[str] | None) -> None:
    from facecls.errors import exit_closed_stdout, safe_text_streams

    safe_text_streams()
    try:
        run_command(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        exit_closed_stdout()


def run_command(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    CLOCK.lap("startup")  # the interpreter, facecls.cli and Hydra's compose API imported
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

    if command in ("predict", "serve"):  # model=FILE names a file here, not the `model` config group
        rest = [f"model_file={a[len('model='):]}" if a.startswith("model=") else a for a in rest]
    if command in ("verify", "enroll", "identify"):  # model=FILE.onnx: an exported embedding model, as ckpt=
        rest = [f"ckpt={a[len('model='):]}" if a.startswith("model=") else a for a in rest]
    if command == "suspects" and rest and "=" not in rest[0] and not rest[0].startswith("-"):
        rest[0] = f"sweep={rest[0]}"  # `facecls suspects SWEEP_DIR`
    if command == "summarize":
        rest = leading_args_as_list(rest, "dirs")  # `facecls summarize A B` → dirs=['A','B']
    from facecls.config.args import quote_plain_values

    rest = quote_plain_values(rest)  # `data.root=/my photos/Zoë` (one argument) is one value
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
        lock_run_dir(rest)
    register_resolvers()

    import hydra

    from facecls.sweeps.validated import reuse_validated_configs

    compose_once(rest)
    reuse_validated_configs()  # a sweep's jobs are composed once, not twice
    task = importlib.import_module(module_name).main
    app = hydra.main(config_path=config_dir(), config_name=config_name, version_base="1.3")(task)
    sys.argv = [f"facecls {command}", *rest]
    app()

    if failed_jobs:
        sys.stderr.write(f"facecls: {len(failed_jobs)} job(s) failed; see the lines above.\n")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
