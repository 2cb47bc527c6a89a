"""Typed configuration: one dataclass per command, settable from CLI flags and from a YAML file.

A config is a ``@configclass`` (a keyword-only dataclass). Each field's ``metadata["help"]`` is its
documentation; ``metadata["positional"]`` makes it a positional argument; ``ge``/``gt``/``le``/``lt``
bound a number (each item of a list), ``min_items`` a list's length; a ``Literal`` type is a fixed
choice. Precedence: the dataclass default < the YAML file (``--config``) < a flag on the command line.

Every value, from YAML, a flag or Python (``FinetuneConfig(lr=...)``), is checked once against its
field's type, strictly (pydantic's strict mode: ``2.5`` is not an int, ``'no'`` is not a bool,
``'1e-4'`` in quotes is not a number, NaN and infinities are no numbers at all) and against its bounds,
before the command touches anything; a bad one is one ``WellreadError`` naming the file (YAML) or the
flag. Then ``__post_init__`` checks what involves several fields.

A list setting takes its items separated by commas or spaces on the command line (``--seeds 0,1,2`` or
``--seeds 0 1 2``; a positional list: spaces only, as a shell glob gives file names), and in YAML a list
or one comma-separated string (``seeds: [0, 1, 2]`` or ``seeds: 0,1,2``).

Each setting is declared once. A ``group`` field nests one config in another (composition): the group's
settings are flags, YAML keys and constructor keywords of their own at the top level, and ``to_dict``
lists them in the group's place, so nesting a group changes no flag, no YAML file and no run directory.
A single setting that another config declares is borrowed with ``same`` (its type, help and bounds; a
command may give it another default or help), so that it means, and is checked, the same everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import annotated_types
import pydantic
import yaml

from wellread.errors import WellreadError

T = TypeVar("T")


BOUNDS = {"ge": annotated_types.Ge, "gt": annotated_types.Gt, "le": annotated_types.Le, "lt": annotated_types.Lt}


def field(default: Any = dataclasses.MISSING, *, help: str, positional: bool = False, short: str | None = None,
          default_factory: Any = dataclasses.MISSING, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, min_items: int | None = None) -> Any:
    """A dataclass field with its help text, whether it is positional on the command line, and bounds
    on its value (``ge=1``: at least 1; of each item of a list; ``min_items``: a list's least length),
    checked for YAML, flags and Python alike."""
    meta = {"help": help, "positional": positional, "short": short, "min_items": min_items,
            "bounds": [BOUNDS[k](v) for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None]}
    return _dataclass_field(default, default_factory, meta)


def _dataclass_field(default: Any, default_factory: Any, meta: dict) -> Any:
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def group(cls: type, *, help: str) -> Any:
    """A nested config (a dataclass whose fields all have defaults), its settings flat on the command line."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "group": True})


def same(owner: type, name: str, default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
         help: str | None = None) -> Any:
    """Setting ``name`` of config ``owner``, declared here too: the same type (the annotation must match,
    tests/test_layout.py checks it), help and bounds, so that it is checked alike in every command that has it;
    ``default`` / ``help`` change them for this command. For one setting that travels between commands (a grid
    hands ``warmup`` to its cells); a set of settings that travel together is a ``group``."""
    src = next((f for f in dataclasses.fields(owner) if f.name == name), None)
    if src is None or src.metadata.get("group"):
        raise TypeError(f"{owner.__name__} has no setting {name!r}")
    meta = dict(src.metadata) | {"same_as": (owner, name)} | ({"help": help} if help is not None else {})
    if default is dataclasses.MISSING and default_factory is dataclasses.MISSING:
        default, default_factory = src.default, src.default_factory
    return _dataclass_field(default, default_factory, meta)


@functools.cache
def _groups(cls: type) -> dict[str, type]:
    """name -> dataclass, for the group fields of ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: _unwrap(hints[f.name])[0] for f in dataclasses.fields(cls) if f.metadata.get("group")}


def configclass(cls: type[T]) -> type[T]:
    """A config: a keyword-only dataclass whose constructor takes the settings as flags and YAML do (a group's
    settings flat: ``FinetuneConfig(random_init=True)``) and checks each value as ``from_mapping`` does."""
    cls = dataclasses.dataclass(kw_only=True)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, **values: Any) -> None:
        init(self, **_checked(cls, values))

    cls.__init__ = __init__
    return cls


def _checked(cls: type, values: dict) -> dict:
    """Constructor keywords: a group's flat settings gathered into the group, every other value checked."""
    values = dict(values)
    names = {f.name for f in dataclasses.fields(cls)}
    for name, gcls in _groups(cls).items():
        own = {k: values.pop(k) for k in setting_names(gcls) if k in values and k not in names}
        if own:
            values[name] = dataclasses.replace(values[name], **own) if name in values else gcls(**own)
    return {k: check_value(cls, k, v) if k in names and k not in _groups(cls) else v for k, v in values.items()}


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


def _nest(cls: type, values: dict, source: str | None, flags: set[str] = frozenset()) -> dict:
    """``values`` with each group's settings replaced by the group, built (and checked) by ``from_mapping``."""
    values = dict(values)
    for name, gcls in _groups(cls).items():
        if name in values:  # a group is no setting: its settings are given one by one
            raise WellreadError(f"unknown setting {name!r} (known: {', '.join(sorted(setting_names(cls)))})",
                                file=source, field=name)
        own = set(setting_names(gcls))
        part = {k: values.pop(k) for k in list(values) if isinstance(k, str) and k.replace("-", "_") in own}
        values[name] = from_mapping(gcls, part, source=source, flags=flags)
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


def _choices(tp: Any) -> tuple | None:
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


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
        if _choices(tp):  # checked by the type, for flags as for YAML (one WellreadError line)
            kwargs["metavar"] = "{" + ",".join(map(str, _choices(tp))) + "}"
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
            kwargs["type"] = str if is_list else _converter(tp)  # a list's items: split at commas, then converted
            if is_list:
                kwargs["nargs"] = "+"
            default = f.default if f.default is not dataclasses.MISSING else None
            if default is not None and not is_list:
                kwargs["help"] = f"{help_text} (default: {default})"
        parser.add_argument(*names, **kwargs)


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` as the number YAML 1.2 says it is (1.1 wants ``1.0e-4``)."""


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                  list("-+0123456789"))


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise WellreadError("no such config file", file=path)
    try:
        data = yaml.load(path.read_bytes().decode("utf-8"), Loader=_YamlLoader) or {}
    except UnicodeDecodeError as e:
        raise WellreadError(f"not UTF-8 text (byte {e.start})", file=path) from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise WellreadError(f"invalid YAML: {getattr(e, 'problem', e)}", file=path,
                            line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise WellreadError("a config file must be a mapping of field: value", file=path)
    return data


def field_bounds(cls: type, name: str) -> list:
    """The bounds (annotated_types Ge, Gt, Le, Lt) of field ``name`` of ``cls`` (of each item of a list); a
    field declared again in a subclass (to change its default or help) keeps the bounds of its base."""
    return _field_meta(cls, name, "bounds") or []


def _field_meta(cls: type, name: str, key: str) -> Any:
    return next((f.metadata[key] for c in cls.__mro__ if dataclasses.is_dataclass(c)
                 for f in dataclasses.fields(c) if f.name == name and f.metadata.get(key)), None)


@functools.cache
def _adapter(cls: type, name: str) -> pydantic.TypeAdapter:
    """A strict validator for field ``name`` of ``cls``: its type, with its bounds on the number inside (each
    item of a list) and a list's least length."""
    tp = typing.get_type_hints(cls)[name]
    bounds, min_items = field_bounds(cls, name), _field_meta(cls, name, "min_items")
    if bounds or min_items:
        inner, is_list = _unwrap(tp)
        item = Annotated[(inner, *bounds)] if bounds else inner
        tp = Annotated[list[item], annotated_types.MinLen(min_items or 0)] if is_list else item
        if _is_optional(typing.get_type_hints(cls)[name]):
            tp = tp | None
    return pydantic.TypeAdapter(tp, config=pydantic.ConfigDict(strict=True, allow_inf_nan=False))


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(cls: type, name: str, value: Any, *, file: str | None = None, flag: bool = False) -> Any:
    """``value`` for field ``name`` of ``cls``, checked strictly against its type and bounds (paths: str -> Path).

    A bad value is a WellreadError naming the flag (``flag``) or the file and field."""
    tp, is_list = _unwrap(typing.get_type_hints(cls)[name])
    where = {"field": f"--{name.replace('_', '-')}"} if flag else {"file": file, "field": name}
    if is_list and (isinstance(value, str) or flag and isinstance(value, list)):
        # a flag's words, or one string "a,b,c" (YAML, Python): the items split at commas (not a positional
        # list's words: file names as a shell gives them), then read as the flag reads a word
        words = [value] if isinstance(value, str) else value
        if isinstance(value, str) or not _is_positional(cls, name):
            words = [w.strip() for v in words for w in v.split(",") if w.strip()]
        items = []
        for w in words:
            try:
                items.append(_converter(tp)(w))
            except (TypeError, ValueError):
                given = value if isinstance(value, str) else " ".join(map(str, value))
                raise WellreadError(f"expected a comma-separated list of {getattr(_converter(tp), '__name__', tp)}, "
                                    f"got {_describe(given)} ({w!r} is not one)", **where) from None
        value = items
    if tp is Path:
        if is_list and isinstance(value, list):
            value = [Path(v) if isinstance(v, str) and v else v for v in value]
        elif isinstance(value, str) and value:
            value = Path(value)
    try:
        return _adapter(cls, name).validate_python(value)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        at = "".join(f" (item {i + 1})" for i in err["loc"] if isinstance(i, int))
        msg = err["msg"].replace("Input should be", "should be").replace("instance of PosixPath", "path") \
            .replace("List should", "should").replace(" after validation, not", ", got")
        hint = ""
        if isinstance(err.get("input", value), bool) and not flag and bool not in (tp, *typing.get_args(tp)):
            hint = " (YAML reads an unquoted on, off, yes or no as true or false: quote the word)"
        got = "" if "got" in msg else f", got {_describe(err.get('input', value))}"
        raise WellreadError(f"{msg}{got}{at}{hint}", **where) from None


def from_mapping(cls: type[T], values: dict, *, source: str | None = None, flags: set[str] = frozenset()) -> T:
    """Build ``cls`` from a dict, refusing unknown keys and checking every value strictly (``check_value``).

    ``flags``: the names whose values came from the command line (named as flags in an error)."""
    values = _nest(cls, values, source, flags)
    groups = _groups(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = key.replace("-", "_") if isinstance(key, str) else key
        if name not in names:
            raise WellreadError(f"unknown setting {key!r} (known: {', '.join(sorted(setting_names(cls)))})",
                                file=source, field=str(key))
        kwargs[name] = value if name in groups else check_value(cls, name, value, file=source, flag=name in flags)
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
    given = {k: v for k, v in vars(ns).items() if k in names}
    values.update(given)
    return from_mapping(cls, values, source=config_file, flags=set(given))


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
