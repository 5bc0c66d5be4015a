"""MkDocs hook: the configuration reference, generated from conf/ at build time so it cannot drift.

Every yaml under conf/ becomes one entry: its group and option (the override that picks it), its own
leading comment, the defaults it pulls in and every key with its default value and the comment on
that key's line. A yaml whose first line (after a `# @package` line) is not a comment fails the
build: the comment is the option's documentation.

The page docs/reference/configuration.md holds the prose; the marker below is replaced by the tables.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from mkdocs.exceptions import PluginError

MARKER = "<!-- facecls:config-reference -->"
CONF = Path(__file__).resolve().parents[2] / "conf"
# What each group is for, in the order the page lists them (groups not named here follow, sorted).
GROUPS = {
    "data": "where the images come from, how they are split and cached",
    "model": "the network: the report's ConvNet and MLP, any torchvision/timm backbone",
    "arch": "named ConvNet shapes (report 1.5), patched onto `model`",
    "optim": "the optimizer (any `torch.optim` class)",
    "sched": "the learning-rate schedule",
    "reg": "regularisers; a list composes (`reg=[dropout,early_stopping]`)",
    "aug": "train-time augmentation, batched on the device",
    "trainer": "how the loop runs",
    "logger": "experiment trackers beside the csv files; a list composes",
    "loss": "the training loss (classification or margin losses for embeddings)",
    "experiment": "one per section of the course report, and comparisons",
    "hparams_search": "Optuna search spaces (with `-m`)",
    "debug": "quick checks of the pipeline",
    "variation": "data variations for `facecls robustness`; a list composes",
    "paths": "where outputs and caches go",
    "hydra": "Hydra's own settings: run dirs, logging, the sweep callback",
    "shared": "blocks several configs pull in through `defaults` (not choices on the command line)",
}
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.\-/@]*)\s*:(?P<rest>.*)$")


class ConfigDocError(PluginError):
    """A conf/ file the reference cannot document (no leading comment)."""


def leading_comment(path: Path, conf: Path = CONF) -> tuple[str | None, list[str]]:
    """(the `# @package` value or None, the lines of the leading comment block without their `# `).

    Raises ConfigDocError when the first line (after `# @package`) is not a comment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    package = None
    if lines and lines[0].startswith("# @package"):
        package = lines[0].split(None, 2)[2].strip()
        lines = lines[1:]
    block = []
    for line in lines:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else line[1:])
    if not block or not block[0].strip():
        rel = f"conf/{path.relative_to(conf).as_posix()}"
        raise ConfigDocError(f"{rel} has no first-line comment — start it with `# what this config is for` "
                             "(the configuration reference is generated from it)")
    return package, block


def comment_markdown(block: list[str]) -> list[str]:
    """A leading comment as markdown: prose lines joined into a paragraph; indented lines, aligned
    `  #` comments and later `facecls …` usage lines kept as they are, in a code block."""
    out, prose, code = [], [], []

    def flush_prose():
        if prose:
            out.extend([md_text(" ".join(prose)), ""])
            prose.clear()

    def flush_code():
        if code:
            out.extend(["```", *code, "```", ""])
            code.clear()

    for i, line in enumerate(block):
        if line.startswith(" ") or "  # " in line or (i and line.startswith("facecls ")):
            flush_prose()
            code.append(line)
        else:
            flush_code()
            prose.append(line.strip())
    flush_prose()
    flush_code()
    return out


def key_comments(path: Path) -> dict[str, str]:
    """dotted key → the comment on its line (indentation gives the nesting; list items are skipped)."""
    comments, stack = {}, []  # stack of (indent, key)
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        m = KEY_LINE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        comment = _trailing_comment(m["rest"])
        if comment:
            comments[".".join(k for _, k in stack)] = comment
    return comments


def _trailing_comment(rest: str) -> str:
    """The `# …` part of a yaml line's value, outside quotes."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1] in " \t"):
            return rest[i + 1:].strip()
    return ""


def flatten(node, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) for every leaf; lists and empty dicts are leaves."""
    if isinstance(node, dict) and node:
        rows = []
        for key, value in node.items():
            rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, node)]


def show_value(value) -> str:
    """A value as a user types it on the command line (yaml flow style, `null`, `true`)."""
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()  # a plain scalar ends its document with `...`


def md_text(text: str) -> str:
    """Comment text for a table cell: `|` escaped, `<…>` shown (outside backtick spans)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def md_code(text: str) -> str:
    """Inline code for a table cell (backticks and pipes survive)."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def primary_defaults(conf: Path = CONF) -> dict[str, str]:
    """group → the option `facecls train` picks by default (conf/train.yaml's defaults list)."""
    chosen = {}
    for entry in yaml.safe_load((conf / "train.yaml").read_text(encoding="utf-8")).get("defaults", []):
        if isinstance(entry, dict):
            for group, option in entry.items():
                if option is not None:
                    chosen[group] = str(option)
    return chosen


def document(path: Path, prefix: str, conf: Path = CONF) -> list[str]:
    """The markdown of one yaml: comment, defaults, package, keys."""
    package, comment = leading_comment(path, conf)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = comment_markdown(comment)
    if package:
        prefix = "" if package == "_global_" else package
        where = f"under `{prefix}.`" if prefix else "at the top level"
        out += [f"Package: `{package}` (its keys land {where}).", ""]
    defaults = data.pop("defaults", None) if isinstance(data, dict) else None
    if defaults:
        shown = ", ".join(md_code(", ".join(f"{k}: {show_value(v)}" for k, v in d.items()) if isinstance(d, dict)
                                  else show_value(d)) for d in defaults)
        out += [f"Pulls in: {shown}", ""]
    comments = key_comments(path)
    rows = flatten(data) if isinstance(data, dict) else []
    if rows:
        out += ["| key | default | comment |", "|---|---|---|"]
        for key, value in rows:
            full = f"{prefix}.{key}" if prefix else key
            out.append(f"| {md_code(full)} | {md_code(show_value(value))} | {md_text(comments.get(key, ''))} |")
        out.append("")
    return out


def package_of(group_dir: Path, path: Path) -> str:
    """Where a group file's keys land without `# @package`: Hydra's default, the group path
    (hydra/job_logging → hydra.job_logging); blocks under a `shared/` folder are pulled in
    `@_here_`, so theirs is the including config's (data/shared → data, shared → top level)."""
    parts = [group_dir.name, *path.relative_to(group_dir).parts[:-1]]
    if "shared" in parts:
        parts = parts[:parts.index("shared")]
    return ".".join(parts)


def option_name(group_dir: Path, path: Path) -> str:
    return path.relative_to(group_dir).with_suffix("").as_posix()


def render(conf: Path = CONF) -> str:
    """The whole reference: primary configs (one per command), then every group and its options."""
    out = ["## Commands' primary configs", "",
           "Each command composes its own file; its keys are top-level overrides (`facecls eval ckpt=…`).", ""]
    for path in sorted(conf.glob("*.yaml")):
        out += [f"### `conf/{path.name}` {{#conf-{path.stem}}}", ""] + document(path, "", conf)
    chosen = primary_defaults(conf)
    groups = [d for d in sorted(conf.iterdir()) if d.is_dir()]
    order = {name: i for i, name in enumerate(GROUPS)}
    groups.sort(key=lambda d: (order.get(d.name, len(order)), d.name))
    for group_dir in groups:
        group = group_dir.name
        files = sorted(group_dir.rglob("*.yaml"))
        choices = [f for f in files if "shared" not in f.relative_to(group_dir).parts]
        out += [f"## `{group}` {{#group-{group}}}", "", md_text(GROUPS.get(group, "")), ""]
        if choices and group not in ("shared", "hydra"):
            default = chosen.get(group)
            names = ", ".join(f"`{option_name(group_dir, f)}`" + (" (default)" if option_name(group_dir, f) == default
                                                                  else "") for f in choices)
            out += [f"Options: {names}", ""]
        for path in files:
            name = option_name(group_dir, path)
            shared = path not in choices or group in ("shared", "hydra")
            title = f"`conf/{path.relative_to(conf).as_posix()}`" if shared else f"`{group}={name}`"
            anchor = f"{group}-{name}".replace("/", "-").replace("_", "-")
            out += [f"### {title} {{#{anchor}}}", ""] + document(path, package_of(group_dir, path), conf)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the marker on the reference page with the generated tables."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
