"""Read params.yaml into typed, validated settings dataclasses.

Each pipeline stage reads only its own sections. A section maps 1:1 onto a frozen dataclass; this
module checks every key before any work starts:

* an unknown key is an error (a typo such as ``jsd_strat`` must not be silently ignored);
* a missing key is an error (DVC's ``-S`` only changes keys that exist, so every key the code
  reads must be written in params.yaml);
* every value must have the field's type (``int`` is accepted where ``float`` is expected).

Errors name the file and the dotted key (``ingest.split.val``) and say how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from entromix.common.errors import ParamsError

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Load a params YAML file as a dict, with clear errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(
            f"{path}: params file not found. Run the stage from the project root (where "
            "params.yaml lives), or pass --params PATH."
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc}). Fix the syntax and re-run.") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level.")
    return data


def section(params: dict[str, Any], name: str, cls: type[T], source: str | Path = DEFAULT_PARAMS) -> T:
    """Build the dataclass ``cls`` from ``params[name]``, validating every key."""
    if name not in params:
        raise ParamsError(
            f"{source}: section '{name}' is missing. Add it (the repository's params.yaml lists every section "
            "and key, with comments)."
        )
    return from_dict(cls, params[name], key=name, source=source)


def from_dict(cls: type[T], data: Any, key: str, source: str | Path = DEFAULT_PARAMS) -> T:
    """Recursively build dataclass ``cls`` from a mapping; ``key`` is the dotted path for errors."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: '{key}' must be a mapping of keys, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        guesses = [
            f"{key}.{u} -> {key}.{close[0]}"
            for u in unknown
            if (close := difflib.get_close_matches(str(u), list(fields), n=1, cutoff=0.6))
        ]
        raise ParamsError(
            f"{source}: unknown key(s) {', '.join(f'{key}.{u}' for u in unknown)}. "
            + (f"Did you mean {'; '.join(guesses)}? " if guesses else "")
            + f"Valid keys in '{key}': {', '.join(fields)}. Check the spelling."
        )
    missing = sorted(f for f in fields if f not in data)
    if missing:
        raise ParamsError(
            f"{source}: missing key(s) {', '.join(f'{key}.{m}' for m in missing)}. "
            "Every setting must be written in params.yaml (the repository's params.yaml lists the defaults)."
        )
    values = {name: _convert(hints[name], data[name], f"{key}.{name}", source) for name in fields}
    return cls(**values)


def _convert(tp: Any, value: Any, key: str, source: str | Path) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _convert(option, value, key, source)
            except ParamsError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ParamsError(errors[0])
        wanted = " or ".join(_describe(option) for option in non_none)
        raise ParamsError(f"{source}: '{key}' is {value!r}; it must be {wanted}.")
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ParamsError(f"{source}: '{key}' is {value!r}; it must be one of {', '.join(repr(a) for a in args)}.")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key, source)
    if origin in (dict, dict) or tp is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{source}: '{key}' must be a mapping, got {value!r}.")
        kt, vt = args or (Any, Any)
        return {_convert(kt, k, f"{key}.{k}", source): _convert(vt, v, f"{key}.{k}", source) for k, v in value.items()}
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list):
            raise ParamsError(f"{source}: '{key}' must be a list, got {value!r}.")
        (it,) = args[:1] or (Any,)
        items = [_convert(it, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{source}: '{key}' must be a number, got {value!r}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{source}: '{key}' must be an integer, got {value!r}.")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{source}: '{key}' must be true or false, got {value!r}.")
        return value
    if tp is str:
        if value is None:
            raise ParamsError(
                f"{source}: '{key}' must be a string and is empty (null or nothing after the colon). Give it a value."
            )
        if not isinstance(value, str):
            raise ParamsError(f"{source}: '{key}' must be a string, got {value!r} (quote it in YAML).")
        return value
    raise TypeError(f"unsupported settings type {tp!r} for {key}")  # a bug in a dataclass, not user input


def _describe(tp: Any) -> str:
    """What a value of type ``tp`` looks like, for an error message."""
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp) or tp
    return {list: "a list", tuple: "a list", dict: "a mapping"}.get(origin, getattr(tp, "__name__", str(tp)))


def to_dict(settings: Any) -> dict[str, Any]:
    """The settings as plain data, for saving next to a stage's outputs."""
    return dataclasses.asdict(settings)
