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


def test_data_and_modeling_do_not_import_what_uses_them():
    import ast

    for folder in ("data", "modeling"):
        for path in (REPO / "wellread" / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert not node.module.startswith(("wellread.train", "wellread.report", "wellread.recipe",
                                                       "wellread.experiments", "wellread.infer")), (path, node.module)
