"""The house's layers: each package imports only the layers below it, so none imports in a loop.

From the bottom: the base modules (config, errors, files, device, progress bars), then data and
models side by side, state (checkpoints, run directory), evaluate, train, then cloud and the two
tools side by side (synth, the synthetic corpus generator; kernel_proof, `szdet check-kernels`),
the GPU check, the command handlers (commands.py) beside the flags the subcommands share
(cli_args.py), and the cli.
Function-local imports count too: a lazy import is still a dependency.

The product, what training and a trained detector run (data, models, state, evaluate, train,
cloud), sits below the tools or beside them, so no product package imports a tool; the tools
import the product. The command handlers import a tool only inside the command that runs it, so
no other command needs a tool's dependencies (pyEDFlib, Triton).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "szdet"
LAYERS = (
    {"__init__", "config", "config_load", "config_yaml", "errors", "fileio", "device", "progress"},
    {"data", "models"},
    {"state"},
    {"evaluate"},
    {"train"},
    {"cloud", "synth", "kernel_proof"},
    {"gpu_check"},
    {"commands", "cli_args"},
    {"cli"},
)
TOOLS = {"synth", "kernel_proof"}
ENTRY_POINTS = ("commands.py", "cli.py")
MAX_FUNCTION_LINES = 60


def _unit(module: str) -> str:
    """``szdet.data.edf`` -> ``data``; ``szdet.cli`` -> ``cli``; ``szdet`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(unit: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported szdet module) for every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("szdet")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("szdet"):
            found.append((node.lineno, node.module))
    return found


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer():
    units = {_unit(_module_name(p)) for p in _sources()}
    assert units <= set().union(*LAYERS), units - set().union(*LAYERS)


def layer_violations() -> list[str]:
    out = []
    for path in _sources():
        unit = _unit(_module_name(path))
        for line, imported in _imports(path):
            other = _unit(imported)
            below, level = _layer(other), _layer(unit)
            # Side by side is not below, except in the base, which has no layers of its own.
            if below > level or (below == level and other != unit and level > 0):
                out.append(f"{path.relative_to(SRC)}:{line} ({unit}) imports {imported}")
    return out


def test_each_layer_imports_only_the_layers_below_it():
    assert layer_violations() == []


def test_the_check_sees_a_cycle(tmp_path, monkeypatch):
    """The check itself: a module of data importing evaluate, even inside a function, is caught."""
    fake = tmp_path / "szdet"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text("def f():\n    from szdet.evaluate import scoring\n")
    (fake / "models.py").write_text("import szdet.data.x\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    assert layer_violations() == [
        "data/x.py:2 (data) imports szdet.evaluate",
        "models.py:1 (models) imports szdet.data.x",
    ]


def eager_tool_imports() -> list[str]:
    """Imports of a tool that run when an entry point loads, not when its command runs."""
    out = []
    for name in ENTRY_POINTS:
        tree = ast.parse((SRC / name).read_text(), name)
        lazy = {
            node.lineno
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(f)
            if isinstance(node, ast.Import | ast.ImportFrom)
        }
        out += [
            f"{name}:{line} imports {imported}"
            for line, imported in _imports(SRC / name)
            if _unit(imported) in TOOLS and line not in lazy
        ]
    return out


def test_the_entry_points_import_a_tool_only_when_its_command_runs():
    assert eager_tool_imports() == []


def test_the_check_keeps_the_tools_out_of_the_product(tmp_path, monkeypatch):
    """A product module importing a tool, even inside a function, is caught; the tools, the GPU
    check and a command function may; an entry point importing a tool as it loads is caught."""
    fake = tmp_path / "szdet"
    for package in ("data", "evaluate", "cloud", "synth", "gpu_check"):
        (fake / package).mkdir(parents=True)
    (fake / "data" / "cache.py").write_text("import szdet.synth.corpus\n")
    (fake / "evaluate" / "x.py").write_text("def f():\n    from szdet.kernel_proof import check\n")
    (fake / "cloud" / "x.py").write_text("from szdet.synth import eeg\n")
    (fake / "synth" / "corpus.py").write_text("from szdet.data import tusz\n")
    (fake / "gpu_check" / "x.py").write_text("from szdet.kernel_proof import parity\n")
    (fake / "commands.py").write_text(
        "import szdet.kernel_proof\n\ndef cmd_synth():\n    from szdet.synth import corpus\n"
    )
    (fake / "cli.py").write_text("from szdet.commands import cmd_synth\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    assert layer_violations() == [
        "cloud/x.py:1 (cloud) imports szdet.synth",
        "data/cache.py:1 (data) imports szdet.synth.corpus",
        "evaluate/x.py:2 (evaluate) imports szdet.kernel_proof",
    ]
    assert eager_tool_imports() == ["commands.py:1 imports szdet.kernel_proof"]


def _long_functions(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno is not None
            if (length := node.end_lineno - start + 1) > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    return out


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_every_function_fits_on_one_screen(path):
    assert _long_functions(path) == []
