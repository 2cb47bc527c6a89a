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


def _config_classes() -> list[type]:
    """Every command's config, its groups and bases: the classes that declare settings."""
    import dataclasses

    from wellread import cli
    from wellread.config import _groups

    seen: list[type] = []

    def visit(cls: type) -> None:
        for c in cls.__mro__:
            if dataclasses.is_dataclass(c) and c not in seen:
                seen.append(c)
                for g in _groups(c).values():
                    visit(g)

    for cmd in cli.COMMANDS.values():
        visit(cmd.config_class)
    return seen


def _declared(cls: type) -> set[str]:
    """The settings ``cls`` declares in its own body (not inherited, not a group, not borrowed with ``same``)."""
    import dataclasses

    own = set(cls.__dict__.get("__annotations__", {}))
    return {f.name for f in dataclasses.fields(cls) if f.name in own and not f.metadata.get("group")
            and "same_as" not in f.metadata}


def test_a_borrowed_setting_has_its_owners_type():
    import dataclasses
    import typing

    from wellread.config import _unwrap

    borrowed = 0
    for cls in _config_classes():
        for f in dataclasses.fields(cls):
            if "same_as" in f.metadata:
                owner, name = f.metadata["same_as"]
                ours, theirs = typing.get_type_hints(cls)[f.name], typing.get_type_hints(owner)[name]
                assert _unwrap(ours) == _unwrap(theirs), (cls.__name__, f.name, ours, theirs)  # None aside
                borrowed += 1
    assert borrowed >= 30


def test_every_setting_of_a_command_is_one_flag_and_grid_and_recipe_declare_none_again():
    from wellread import cli
    from wellread.config import setting_names
    from wellread.recipe.config import RecipeConfig
    from wellread.train.grid import GridConfig

    for name, cmd in cli.COMMANDS.items():
        names = setting_names(cmd.config_class)
        assert len(names) == len(set(names)), name
    classes = _config_classes()
    # names these two use for a setting of their own (another command's setting of that name is another thing)
    their_own = {GridConfig: {"out", "teacher", "objective", "workers"},
                 RecipeConfig: {"out", "teacher", "source", "data", "text", "time_budget", "vocab", "group_lines"}}
    for cls, allowed in their_own.items():
        elsewhere = set().union(*(_declared(c) for c in classes if c is not cls))
        assert _declared(cls) & elsewhere <= allowed, (cls.__name__, _declared(cls) & elsewhere - allowed)
