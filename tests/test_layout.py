"""The package's shape (docs/architecture.md): no import cycle, function-local imports included
(tools/layout_stats.py builds the import graph with ast), and the layers it describes."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_no_module_of_the_package_imports_itself_back():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "layout_stats.py"), str(REPO / "wellread")],
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("import cycles"))
    assert line.endswith(": 0"), out[out.index("import cycles"):]


def imported(folder: str) -> list[tuple[str, str]]:
    """(file, module) for every import of a wellread module in ``wellread/<folder>``, function-local ones included."""
    import ast

    out = []
    for path in (REPO / "wellread" / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                out.append((path.name, node.module))
            elif isinstance(node, ast.Import):
                out += [(path.name, a.name) for a in node.names]
    return out


def test_data_and_modeling_do_not_import_what_uses_them():
    for folder in ("data", "modeling"):
        for path, module in imported(folder):
            assert not module.startswith(("wellread.train", "wellread.report", "wellread.recipe",
                                          "wellread.experiments", "wellread.infer")), (folder, path, module)


def test_training_and_reporting_do_not_import_each_other():
    """train/ writes run directories and returns results; report/ draws them (a pre-training run's curves.png,
    a grid's table and heatmaps), called by the command or the recipe when a run is done."""
    for folder, above in (("train", ("wellread.report", "wellread.recipe")), ("report", ("wellread.train", "wellread.recipe"))):
        for path, module in imported(folder):
            assert not module.startswith(above), (folder, path, module)
