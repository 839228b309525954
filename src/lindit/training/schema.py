"""Typed YAML: map plain dicts onto dataclasses, naming the key path of every unknown key or wrong type.

    from_dict(RunConfig, yaml.safe_load(text))   # ValueError: stages[1].lr: expected float, got 'fast'

Supported field types: bool, int, float, str, ``Literal[...]``, ``X | None``, ``list[X]``, ``dict[str, Any]``
and nested dataclasses. A dataclass may define ``_coerce(value)`` (a classmethod) to accept a shorthand,
e.g. a plain string for a model source. A field whose YAML key differs from its Python name (``class``)
carries ``metadata={"key": "class"}``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

MISSING = dataclasses.MISSING


def yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data`` (a dict), checking keys and types; ValueError names the key path."""
    coerce = getattr(cls, "_coerce", None)
    if coerce is not None:
        data = coerce(data, path)
    if not isinstance(data, dict):
        raise ValueError(f"{path or 'config'}: expected a mapping, got {_show(data)}")
    fields = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValueError(f"{_join(path, str(unknown[0]))}: unknown key; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, f in fields.items():
        if key in data:
            values[f.name] = convert(hints[f.name], data[key], _join(path, key))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ValueError(f"{_join(path, key)}: missing required key")
    return cls(**values)


def convert(tp: Any, value: Any, path: str) -> Any:
    """``value`` checked (and where lossless, converted) against type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{path}: only 'X | None' unions are supported")
        return convert(inner[0], value, path)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{path}: expected one of {', '.join(map(repr, args))}, got {_show(value)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {_show(value)}")
        return [convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {_show(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    return _scalar(tp, value, path)


def _scalar(tp: type, value: Any, path: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and not math.isfinite(number):
            raise ValueError(f"{path}: expected a finite number, got {_show(value)}")
        if number is not None:
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{path}: unsupported field type {tp!r}")
    raise ValueError(f"{path}: expected {tp.__name__}, got {_show(value)}")


def to_dict(obj: Any) -> Any:
    """A dataclass tree back to plain YAML-able data (inverse of ``from_dict``)."""
    if dataclasses.is_dataclass(obj):
        return {yaml_key(f): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def set_path(data: dict, path: str, value: Any) -> None:
    """Set ``a.b[2].c`` in nested dicts/lists (an override from the command line); creates dicts on the way."""
    parts = _split_path(path)
    node = data
    for here, nxt in zip(parts, parts[1:]):
        node = _child(node, here, path, create=isinstance(nxt, str))
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ValueError(f"{path}: index {last} out of range")
    elif not isinstance(node, dict):
        raise ValueError(f"{path}: {last!r} is not inside a mapping")
    node[last] = value


def _child(node: Any, key: str | int, path: str, create: bool) -> Any:
    if isinstance(key, int):
        if not isinstance(node, list) or not -len(node) <= key < len(node):
            raise ValueError(f"{path}: index {key} out of range")
        return node[key]
    if not isinstance(node, dict):
        raise ValueError(f"{path}: {key!r} is not inside a mapping")
    if node.get(key) is None and create:
        node[key] = {}
    return node[key] if key in node else node.setdefault(key, [])


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in path.replace("]", "").split("."):
        name, *indices = token.split("[")
        if name:
            parts.append(name)
        parts += [int(i) for i in indices]
    if not parts:
        raise ValueError(f"empty override key {path!r}")
    return parts


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{type(value).__name__} {value!r}"
