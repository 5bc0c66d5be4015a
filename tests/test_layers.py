"""The package's layers stay layered: commands/ and cli are thin and import torch only when a
command runs; the library never reaches back up into them; models/ and data/ do not depend on
what trains or inspects them; inference (inference/, inspect/, faces/, serve/) never imports training/;
config/ is torch-free (a config error is reported quickly) and imports no other facecls layer.

The import graph is read statically with `ast`: every `import` / `from … import` of a facecls
module anywhere in a file (inside functions too: a lazy import is still a dependency), except
those under `if TYPE_CHECKING:` (annotations only)."""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import facecls

SRC = Path(facecls.__file__).resolve().parent  # src/facecls
ENTRY_POINTS = ("facecls.commands", "facecls.cli", "facecls.__main__")
# Everything that uses a trained model: it may not depend on how the model was trained.
INFERENCE = ("facecls.inference", "facecls.inspect", "facecls.faces", "facecls.serve", "facecls.export")
# Inference commands: thin wrappers over INFERENCE, never over training/.
INFERENCE_COMMANDS = tuple(f"facecls.commands.{name}" for name in (
    "eval", "predict", "rf", "visualize", "robustness", "verify", "enroll", "identify", "export", "serve"))

# (importer, imported) pairs that break a rule on purpose.
ALLOWED = {
    # `facecls report` runs every experiment's command in-process, exactly as a user's shell
    # would run `facecls train …`: it goes through the CLI entry point on purpose.
    ("facecls.report.runner", "facecls.cli"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@dataclass(frozen=True)
class Import:
    target: str        # the module imported (a facecls submodule when `from pkg import submodule`)
    line: int
    top_level: bool    # runs when the importing module is imported (not inside a def/lambda)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path) -> list[Import]:
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:  # the `else:` branch does run
                visit(child, top_level)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, top_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append(Import(base, node.lineno, top_level))
            for alias in node.names:  # `from facecls.training import run` imports a module too
                if f"{base}.{alias.name}" in MODULES:
                    found.append(Import(f"{base}.{alias.name}", node.lineno, top_level))
        inside_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, top_level and not inside_def)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def violations(graph: dict[str, list[Import]], allowed=ALLOWED) -> list[str]:
    """One line per import that breaks a layer rule."""
    found = []
    for importer, imports in graph.items():
        where = f"{MODULES[importer].relative_to(SRC.parent)}" if importer in MODULES else importer
        for imp in imports:
            if (importer, imp.target) in allowed:
                continue
            if not within(importer, *ENTRY_POINTS) and within(imp.target, "facecls.commands", "facecls.cli"):
                found.append(f"{where}:{imp.line}: library module {importer} imports {imp.target} "
                             "(only the CLI layer may)")
            if within(importer, "facecls.models", "facecls.data") and \
                    within(imp.target, "facecls.training", "facecls.inspect", "facecls.sweeps", "facecls.report"):
                found.append(f"{where}:{imp.line}: {importer} imports {imp.target} "
                             "(models/ and data/ sit below training/inspect/sweeps/report)")
            if within(importer, *INFERENCE, *INFERENCE_COMMANDS) and within(imp.target, "facecls.training"):
                found.append(f"{where}:{imp.line}: {importer} imports {imp.target} "
                             "(inference never imports training/: shared code belongs in facecls.inference)")
            if within(importer, "facecls.config") and within(imp.target, "facecls") and \
                    not within(imp.target, "facecls.config", "facecls.errors"):
                found.append(f"{where}:{imp.line}: {importer} imports {imp.target} "
                             "(config/ sits below the library: it imports only facecls.errors)")
            if within(importer, "facecls.config") and imp.top_level and within(imp.target, "torch"):
                found.append(f"{where}:{imp.line}: {importer} imports {imp.target} at module level "
                             "(config/ must load without torch)")
    return found


def test_the_import_graph_was_read():
    """Guards the checks below against passing on an empty or mis-parsed graph."""
    assert {"facecls.cli", "facecls.commands.train", "facecls.training.engine", "facecls.config.compose",
            "facecls.report.runner", "facecls.models.convnet", "facecls.data.dataset"} <= set(MODULES)
    targets = {imp.target for imp in GRAPH["facecls.commands.train"]}
    assert "facecls.training.run" in targets  # a lazy import inside main() counts
    assert any(imp.target == "facecls.cli" for imp in GRAPH["facecls.report.runner"])  # the allowed one
    assert any(imp.target == "torch" and imp.top_level for imp in GRAPH["facecls.training.engine"])


def test_layers_are_respected():
    found = violations(GRAPH)
    assert not found, "import-layer violations:\n" + "\n".join(found)


def test_each_rule_catches_its_violation():
    """The rules fire on a made-up graph (so an empty report above means something)."""
    graph = {
        "facecls.training.run": [Import("facecls.commands.train", 1, False)],     # library → commands
        "facecls.inspect.loading": [Import("facecls.cli", 2, False)],              # library → cli
        "facecls.models.convnet": [Import("facecls.training.engine", 3, False)],   # models → training
        "facecls.data.dataset": [Import("facecls.report", 4, True)],               # data → report
        "facecls.config.validate": [Import("torch.nn", 5, True),                   # config → torch, eagerly
                                    Import("torch", 6, False)],                    # (lazily is fine)
        "facecls.commands.train": [Import("facecls.training.run", 7, False)],      # fine: commands → library
        "facecls.report.runner": [Import("facecls.cli", 8, False)],                # allowed
        "facecls.training.engine": [Import("facecls.data.batches", 9, True)],      # fine: downwards
        "facecls.inspect.robustness": [Import("facecls.training.engine", 10, True)],  # inference → training
        "facecls.commands.eval": [Import("facecls.training.scoring", 11, False)],     # inference command → training
        "facecls.inference.loading": [Import("facecls.inference.checkpoint", 12, True)],  # fine
        "facecls.config.checks": [Import("facecls.data.split", 13, False)],       # config → data (upwards)
    }
    found = violations(graph)
    assert [line.split(":")[1] for line in found] == ["1", "2", "3", "4", "5", "10", "11", "13"], found
    assert any("facecls.report.runner" in line for line in violations(graph, allowed=set()))


def test_allowed_exceptions_are_still_needed():
    """An exception that no longer occurs should be deleted from ALLOWED."""
    for importer, target in ALLOWED:
        assert any(imp.target == target for imp in GRAPH[importer]), (importer, target)


def import_in_fresh_python(modules: list[str]) -> list[str]:
    """Import ``modules`` in a new interpreter; return the heavy modules that came with them."""
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(' '.join(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_cli_and_commands_import_without_torch():
    commands = sorted(name for name in MODULES if within(name, "facecls.commands"))
    assert "facecls.commands.train" in commands and "facecls.commands.eval" in commands
    assert "torch" not in import_in_fresh_python(["facecls.cli", *commands])


def test_config_package_imports_without_torch():
    config = sorted(name for name in MODULES if within(name, "facecls.config"))
    assert "torch" not in import_in_fresh_python(config)


@pytest.mark.parametrize("source, expected", [
    ("import facecls.training.run", [("facecls.training.run", True)]),
    ("def f():\n    from facecls.training import run", [("facecls.training", False), ("facecls.training.run", False)]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\nelse:\n    import json",
     [("typing", True), ("json", True)]),
    ("try:\n    import torch\nexcept ImportError:\n    pass", [("torch", True)]),
    ("class A:\n    import torch", [("torch", True)]),
    ("f = lambda: __import__('torch')", []),
])
def test_import_reader(source, expected, tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(source)
    assert [(i.target, i.top_level) for i in imports_of("facecls.models.mod", path)] == expected


def test_relative_imports_resolve(tmp_path):
    (tmp_path / "pkg").mkdir()
    init, mod = tmp_path / "pkg" / "__init__.py", tmp_path / "pkg" / "mod.py"
    init.write_text("from . import engine\n")
    mod.write_text("from .engine import fit\nfrom ..data import dataset\n")
    assert [i.target for i in imports_of("facecls.training", init)] == ["facecls.training", "facecls.training.engine"]
    assert [i.target for i in imports_of("facecls.training.mod", mod)] == \
        ["facecls.training.engine", "facecls.data", "facecls.data.dataset"]
