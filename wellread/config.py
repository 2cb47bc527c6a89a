"""Typed configuration: one dataclass per command, settable from CLI flags and from a YAML file.

Each field's ``metadata["help"]`` is its documentation; ``metadata["positional"]`` makes it a
positional argument. Precedence: the dataclass default < the YAML file (``--config``) < a flag given
on the command line. ``__post_init__`` checks values, raising ``WellreadError`` naming the field.

A ``group`` field nests one config in another (composition): the group's settings are flags and YAML
keys of their own at the top level, and ``to_dict`` lists them in the group's place, so nesting a group
changes no flag, no YAML file and no run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from wellread.errors import WellreadError

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, *, help: str, positional: bool = False, short: str | None = None,
          default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text (and whether it is positional on the command line)."""
    meta = {"help": help, "positional": positional, "short": short}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def group(cls: type, *, help: str) -> Any:
    """A nested config (a dataclass whose fields all have defaults), its settings flat on the command line."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "group": True})


def _groups(cls: type) -> dict[str, type]:
    """name -> dataclass, for the group fields of ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: _unwrap(hints[f.name])[0] for f in dataclasses.fields(cls) if f.metadata.get("group")}


def setting_fields(cls: type) -> list[dataclasses.Field]:
    """Every setting of ``cls`` (a dataclass field), the settings of its groups in their place."""
    groups = _groups(cls)
    return [s for f in dataclasses.fields(cls) for s in (setting_fields(groups[f.name]) if f.name in groups else [f])]


def setting_names(cls: type) -> list[str]:
    """The names of ``setting_fields``: what flags and YAML keys name."""
    return [f.name for f in setting_fields(cls)]


def carry(cls: type[T], source: Any, **changes: Any) -> T:
    """A ``cls`` config holding every setting that ``source`` (another config) has by the same name, then
    ``changes``: how a command hands its settings to the runs it makes (a grid to its cells, distillation
    to its student) without copying fields by hand. Built and checked as from YAML (``from_mapping``)."""
    names = set(setting_names(cls))
    return from_mapping(cls, {k: v for k, v in to_dict(source).items() if k in names} | changes)


def _nest(cls: type, values: dict, source: str | None) -> dict:
    """``values`` with each group's settings replaced by the group, built (and checked) by ``from_mapping``."""
    values = dict(values)
    for name, gcls in _groups(cls).items():
        if name in values:  # a group is no setting: its settings are given one by one
            raise WellreadError(f"unknown setting {name!r} (known: {', '.join(sorted(setting_names(cls)))})",
                                file=source, field=name)
        own = set(setting_names(gcls))
        part = {k: values.pop(k) for k in list(values) if k.replace("-", "_") in own}
        values[name] = from_mapping(gcls, part, source=source)
    return values


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_list) with Optional removed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def _converter(tp: Any):
    if tp is Path:
        return str
    if typing.get_origin(tp) is typing.Literal:
        return type(typing.get_args(tp)[0])
    return tp


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one argument per dataclass field, plus ``--config FILE.yaml``."""
    _add_fields(parser, cls)
    parser.add_argument("--config", metavar="FILE.yaml", help="read these settings from a YAML file; flags override it")


def _add_fields(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("group"):
            _add_fields(parser, _unwrap(hints[f.name])[0])
            continue
        tp, is_list = _unwrap(hints[f.name])
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
        if typing.get_origin(tp) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        if f.metadata.get("positional"):
            kwargs.pop("default")
            if is_list:
                kwargs["nargs"] = "*" if f.default_factory is not dataclasses.MISSING else "+"
            elif f.default is not dataclasses.MISSING:
                kwargs["nargs"] = "?"
                kwargs["default"] = argparse.SUPPRESS
            kwargs["type"] = _converter(tp)
            parser.add_argument(f.name, metavar=f.name.upper(), **kwargs)
            continue
        names = [f"--{f.name.replace('_', '-')}"]
        if f.metadata.get("short"):
            names.insert(0, f.metadata["short"])
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _converter(tp)
            if is_list:
                kwargs["nargs"] = "+"
            default = f.default if f.default is not dataclasses.MISSING else None
            if default is not None and not is_list:
                kwargs["help"] = f"{help_text} (default: {default})"
        parser.add_argument(*names, **kwargs)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise WellreadError("no such config file", file=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise WellreadError(f"invalid YAML: {getattr(e, 'problem', e)}", file=path,
                            line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise WellreadError("a config file must be a mapping of field: value", file=path)
    return data


def from_mapping(cls: type[T], values: dict, *, source: str | None = None) -> T:
    """Build ``cls`` from a dict, refusing unknown keys and coercing types (Path, lists)."""
    values = _nest(cls, values, source)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise WellreadError(f"unknown setting {key!r} (known: {', '.join(sorted(setting_names(cls)))})", file=source,
                              field=key)
        tp, is_list = _unwrap(hints[name])
        if value is not None and tp is Path:
            value = [Path(v) for v in value] if is_list else Path(value)
        kwargs[name] = value
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in kwargs]
    if missing:
        flags = ", ".join(n.upper() if _is_positional(cls, n) else f"--{n.replace('_', '-')}" for n in missing)
        raise WellreadError(f"missing required setting(s): {flags}", file=source)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise WellreadError(str(e), file=source) from None


def from_args(cls: type[T], ns: argparse.Namespace) -> T:
    """The dataclass for a parsed command line: YAML (if ``--config``) overridden by given flags."""
    values: dict = {}
    config_file = getattr(ns, "config", None)
    if config_file:
        values.update(load_yaml(config_file))
    names = set(setting_names(cls))
    values.update({k: v for k, v in vars(ns).items() if k in names})
    return from_mapping(cls, values, source=config_file)


def _is_positional(cls: type, name: str) -> bool:
    return any(f.name == name and f.metadata.get("positional") for f in dataclasses.fields(cls))


def to_dict(cfg: Any) -> dict:
    """A YAML-safe dict of a config (paths as strings)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.metadata.get("group"):
            out.update(to_dict(v))
            continue
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, (list, tuple)):
            v = [str(x) if isinstance(x, Path) else x for x in v]
        out[f.name] = v
    return out


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
