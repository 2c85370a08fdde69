"""The package's layering: each module imports only modules of its own layer or below.

The layers are the table in ired_mining.rundir's docstring; this test reads that table, so the
documentation and the check cannot drift apart.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import ired_mining
import ired_mining.rundir

PACKAGE = Path(ired_mining.__file__).parent


def layers() -> dict[str, int]:
    """Module → layer number (0 = ground), from the table in rundir's docstring."""
    doc = ired_mining.rundir.__doc__
    table = doc[doc.index("Layers of the package") :].split("\n\n")[1]
    out = {}
    for rank, line in enumerate(table.strip().splitlines()):
        _, names = re.match(r"\s*(\w+)\s+(.*)", line).groups()
        out |= {name.strip(): rank for name in names.split(",")}
    return out


def imported_modules(source: str) -> set[str]:
    """Every module an ired_mining source file imports, lazily or not, as a dotted name."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def package_module(dotted: str) -> str | None:
    """ired_mining.report.plots → report (a package's modules share its layer); None outside the package."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "ired_mining" and len(parts) > 1 else None


def upward_imports(source: str, module: str, table: dict[str, int]) -> list[str]:
    own = table[module]
    return sorted(
        f"{module} imports {dotted} ({table.get(package_module(dotted), 'unlisted')} > {own})"
        for dotted in imported_modules(source)
        if package_module(dotted) and table.get(package_module(dotted), len(table)) > own
    )


def modules() -> dict[str, list[Path]]:
    """Top-level module (or package) name → its source files."""
    out: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "conf" or rel == Path("__init__.py"):
            continue
        out.setdefault(rel.parts[0].removesuffix(".py"), []).append(path)
    return out


def test_every_module_has_a_layer():
    unplaced = sorted(set(modules()) - set(layers()))
    assert not unplaced, f"add {unplaced} to the layer table in ired_mining/rundir.py's docstring"


def test_nothing_imports_upwards():
    table = layers()
    problems = [
        p
        for name, files in modules().items()
        if name in table
        for f in files
        for p in upward_imports(f.read_text(), name, table)
    ]
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_upward_import():
    table = layers()
    source = "import json\ndef f():\n    from ired_mining.train import main\n    import ired_mining.report.plots\n"
    assert upward_imports(source, "rundir", table) == [
        f"rundir imports ired_mining.report.plots ({table['report']} > 0)",
        f"rundir imports ired_mining.train ({table['train']} > 0)",
    ]
    assert upward_imports(source, "train", table) == []


def test_rundir_stands_on_stdlib_torch_omegaconf_and_checkpoint():
    allowed = set(sys.stdlib_module_names) | {"torch", "omegaconf", "ired_mining"}
    names = imported_modules((PACKAGE / "rundir.py").read_text())
    assert {n.split(".")[0] for n in names} <= allowed, names
    assert {n for n in names if n.startswith("ired_mining.")} <= {"ired_mining.checkpoint"}


def test_training_does_not_import_the_report():
    names = imported_modules((PACKAGE / "train.py").read_text())
    assert not [n for n in names if package_module(n) == "report"]
