"""Check command-line overrides before Hydra composes, so a mistyped group choice is one
clear line that lists the allowed values (Hydra's own message spans a screen)."""
from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from facecls.config.args import unquote
from facecls.config.compose import config_keys
from facecls.errors import exit_with

# Groups whose empty choice is spelled `null` (`experiment=null`).
OPTIONAL_GROUPS = {"experiment", "debug", "hparams_search"}


def available_choices(conf_dir: str, group: str) -> list[str]:
    """The options of a config group: its yaml files, those in sub-folders as `sub/name`
    (experiment=transfer/backbones). A `shared/` sub-folder holds blocks other files of the
    group pull in, not options."""
    folder = Path(conf_dir) / group
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml")
                  if "shared" not in p.relative_to(folder).parts[:-1])


def _values(override) -> list:
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    value = override.value()
    return value if isinstance(value, list) else [value]


def check_overrides(conf_dir: str, config_name: str, args: list[str]) -> None:
    """Exit with one line if an override names a config group option that does not exist."""

    tokens = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(tokens)
    except HydraException as err:  # OverrideParseException, or the lexer's own on a character it does not know
        exit_with(f"cannot parse the override: {str(err).splitlines()[0]} "
                  "— write key=value, lists as key=[a,b], sweeps (with -m) as key=a,b; quote a value with spaces, "
                  "non-ASCII letters or special characters for Hydra: \"key='my photos/Zoë'\".")
    check_group_choices(conf_dir, overrides)
    check_keys(conf_dir, config_name, overrides)


def check_group_choices(conf_dir: str, overrides: list) -> None:
    for override in overrides:
        group = override.key_or_group
        if "." in group or group.startswith("hydra") or not (Path(conf_dir) / group).is_dir():
            continue
        choices = available_choices(conf_dir, group)
        for value in _values(override):
            if value is None and group in OPTIONAL_GROUPS:
                continue
            if override.is_delete() or str(value) in choices:
                continue
            exit_with(f"unknown {group} '{value}' — choose one of: {', '.join(choices)} "
                      f"({suggestion(conf_dir, group, str(value), choices)}).")


def named_options(conf_dir: str, group: str) -> dict[str, str]:
    """Options of a group that build any model by `name` (model=finetune, model=feature_extractor:
    a `_target_` and a `name`), each with its default name. Presets (alexnet_feature) fix the name."""
    named = {}
    for option in available_choices(conf_dir, group):
        raw = OmegaConf.load(Path(conf_dir) / group / f"{option}.yaml")
        if isinstance(raw, DictConfig) and "_target_" in raw and isinstance(raw.get("name"), str):
            named[option] = raw.name
    return named


def suggestion(conf_dir: str, group: str, value: str, choices: list[str]) -> str:
    """What to write instead of an unknown group option: the option it is a typo of; else, for a
    group that builds models by name, the value as that name (`model=resnet` → `model=finetune
    model.name=resnet18`: a backbone is a name, not an option); else the first option."""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {group}={close[0]}?"
    named = named_options(conf_dir, group)
    if not named:
        return f"e.g. {group}={choices[0] if choices else '…'}"
    defaults = sorted(set(named.values()))
    name = next((d for d in defaults if d.startswith(value)), None) or \
        next(iter(difflib.get_close_matches(value, defaults, n=1, cutoff=0.8)), value)
    ways = " or ".join(f"{group}={option} {group}.name={name}" for option in named)
    return f"a backbone by name: {ways}; `facecls models` lists the names"


def _plain(override) -> bool:
    """A `key=value` override (not +key, ++key or ~key)."""
    return not (override.is_add() or override.is_force_add() or override.is_delete())


def _first(override) -> str:
    """The override as `key=value` with a sweep reduced to its first value (enough to
    compose a config whose keys can be checked)."""
    value = _values(override)[0] if override.is_sweep_override() else override.value()
    # A list of group options (variation=[rotation,scale]) in Hydra's flow syntax.
    text = f"[{','.join(map(str, value))}]" if isinstance(value, list) else value
    return f"{override.key_or_group}={text if value is not None else 'null'}"


def check_keys(conf_dir: str, config_name: str, overrides: list) -> None:
    """Exit with one line if an override sets a key the composed config does not have
    (Hydra would refuse too, over several lines). `+key=…` adds keys and is not checked."""
    dotted = [o for o in overrides if "." in o.key_or_group and not o.key_or_group.startswith("hydra")
              and o.package is None and _plain(o)]
    if not dotted:
        return

    groups = [_first(o) for o in overrides if "." not in o.key_or_group
              and (Path(conf_dir) / o.key_or_group).is_dir() and _plain(o)]
    tree = config_keys(conf_dir, config_name, groups)  # kept on disk while conf/ is unchanged
    if tree is None:  # let Hydra report whatever stops composition, as it would anyway
        return

    for override in dotted:
        key = override.key_or_group
        parts, node = key.split("."), tree
        for depth, part in enumerate(parts):
            if not isinstance(node, dict):
                break  # it indexes into a list (or below a plain value)
            if part not in node:  # e.g. trainer.foo=1, or eval.tta=… where the command has no eval node
                walked, last = ".".join(parts[:depth]), depth == len(parts) - 1
                where = f"'{walked}' has" if walked else f"the {config_name} config has"
                exit_with(f"unknown key '{'.'.join(parts[:depth + 1])}'" + ("" if last else f" (in {key})")
                          + f" — {where}: {', '.join(map(str, node))}"
                          + (f" (to add a new key write +{key}=…)." if last else f"{_hint(key, tree)}."))
            node = node[part]
        else:
            check_settings_value(key, node, override)


def _hint(key: str, tree: dict) -> str:
    """A pointer for a key that lives under another name in this command's config."""
    if key.startswith("eval.tta") and "flip" in (tree.get("verify") or {}):
        return " (verification's test-time augmentation is verify.flip=true)"
    return ""


def check_settings_value(key: str, settings, override) -> None:
    """Exit with one line if ``key`` holds settings (a node with keys of its own) and the override
    gives it a list, or a dict with keys it does not have (Hydra would print its merge error over
    several lines). A plain value passes: some such nodes have a short form (data.faces=detect)."""
    if not isinstance(settings, dict) or override.is_sweep_override():
        return
    value, known = override.value(), ", ".join(map(str, settings))
    first = next((k for k in settings if not str(k).startswith("_")), "key")
    if isinstance(value, list):
        exit_with(f"{key} holds settings ({known}), not a list — set one of them, e.g. {key}.{first}=….")
    if isinstance(value, dict):
        unknown = [str(k) for k in value if k not in settings]
        if unknown:
            exit_with(f"unknown key '{key}.{unknown[0]}' — '{key}' has: {known} (to add a new key write "
                      f"+{key}.{unknown[0]}=…).")


def run_dir_target(args: list[str]) -> str:
    """Where `facecls train ARGS` will write, as Hydra decides it — not by argument order: the
    run dir (``hydra.sweep.dir`` with -m) when given, else ``paths.output_dir``, else outputs/.
    Of one key given twice the last wins, as in Hydra."""

    def last(key: str) -> str | None:
        found = [a.split("=", 1)[1] for a in args if a.lstrip("+").startswith(f"{key}=")]
        return unquote(found[-1]) if found else None

    multirun = "-m" in args or "--multirun" in args
    return last("hydra.sweep.dir" if multirun else "hydra.run.dir") or last("paths.output_dir") or "outputs"


def check_output_dir(args: list[str]) -> None:
    """Exit with one line if the run dir cannot be created or written (Hydra would print a
    traceback, or training would fail at its first file). Creates nothing."""
    target = run_dir_target(args)
    if "${" in target:
        return  # an interpolation: only Hydra knows where it points
    folder = Path(target).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        exit_with(f"cannot create the run dir '{target}': '{folder}' is a file — set paths.output_dir (or "
                  "hydra.run.dir) to a folder.")
    try:  # a real write: os.access says yes to root on a read-only disk's folders
        fd, probe = tempfile.mkstemp(prefix=".facecls-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        exit_with(f"cannot create the run dir '{target}': '{folder}' is not writable "
                  f"({(err.strerror or str(err)).lower()}) — set paths.output_dir (or hydra.run.dir) to a folder "
                  "you can write to.")
