"""Command-line flags: generated from a settings dataclass's fields (as OpenLTH does for its
hyperparameters), plus the two every command shares (``--device``, ``--quiet``).

A field ``name: T = default`` becomes the flag ``--name`` (``_`` written ``-``) with

- the type ``T``; ``T | None`` takes ``T`` (the default None means "decided later");
- ``tuple[T, ...]`` or ``list[T]``: one or more values (``nargs="+"``); ``tuple[T, T]``: exactly two;
- ``bool``: a switch, ``--name`` when the default is False and ``--no-name`` when it is True;
- ``help``, ``choices`` and ``metavar`` from ``field(metadata={...})``; ``metadata={"flag": False}``
  keeps a library-only field off the command line (it keeps its default).

:func:`settings_from_args` turns the parsed flags back into the dataclass, so a command's options,
the settings its library function takes and the workflow's config keys have the same names.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

__all__ = ["add_common_flags", "add_settings_flags", "flag_fields", "flag_name", "settings_from_args"]


def flag_fields(settings_cls: type) -> list[dataclasses.Field]:
    """The fields of ``settings_cls`` that have a flag, in declaration order."""
    return [f for f in dataclasses.fields(settings_cls) if f.metadata.get("flag", True)]


def flag_name(f: dataclasses.Field) -> str:
    """The flag of a field: ``--bn-modes`` for ``bn_modes``, ``--no-deflate`` for ``deflate: bool = True``."""
    name = f.name.replace("_", "-")
    return f"--no-{name}" if f.default is True else f"--{name}"


def _strip_none(tp: Any) -> Any:
    """``T`` for ``T | None`` (and ``Optional[T]``), else ``tp``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _argument(f: dataclasses.Field, tp: Any) -> dict[str, Any]:
    """``add_argument`` keywords of a field of (resolved) type ``tp``."""
    meta = {k: f.metadata[k] for k in ("help", "choices", "metavar") if k in f.metadata}
    tp = _strip_none(tp)
    if tp is bool:
        return {
            "action": "store_false" if f.default is True else "store_true",
            "dest": f.name,
            "help": meta.get("help"),
        }
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list):
        many = origin is list or (len(args) == 2 and args[1] is Ellipsis)
        if not args or not (many or all(a == args[0] for a in args)):
            raise TypeError(f"{f.name}: only tuple[T, ...], tuple[T, T, ...] and list[T] become flags, got {tp}")
        nargs = "+" if many else len(args)
        return {"type": args[0], "nargs": nargs, "default": list(f.default), "dest": f.name, **meta}
    if tp not in (int, float, str):
        raise TypeError(f"{f.name}: a flag needs an int, float, str or bool field (or a tuple of them), got {tp}")
    return {"type": tp, "default": f.default, "dest": f.name, **meta}


def add_settings_flags(
    parser: argparse.ArgumentParser, settings_cls: type, only: tuple[str, ...] | None = None
) -> None:
    """Add one flag per field of the dataclass ``settings_cls`` (see the module docstring), or per
    field named in ``only``."""
    types_ = typing.get_type_hints(settings_cls)
    for f in flag_fields(settings_cls):
        if only is None or f.name in only:
            parser.add_argument(flag_name(f), **_argument(f, types_[f.name]))


def settings_from_args(settings_cls: type, args: argparse.Namespace):
    """The ``settings_cls`` instance the parsed flags describe (fields without a flag keep their default)."""
    types_ = typing.get_type_hints(settings_cls)
    values = {}
    for f in flag_fields(settings_cls):
        value = getattr(args, f.name)
        origin = typing.get_origin(_strip_none(types_[f.name]))
        values[f.name] = origin(value) if origin in (tuple, list) and value is not None else value
    return settings_cls(**values)


def add_expect_flags(parser: argparse.ArgumentParser) -> None:
    """``--expect-seed`` and ``--expect-hash``: refuse a run folder whose ``run.json`` holds another seed or
    recipe (the workflow passes both, so a folder moved or copied to another run's place is never used)."""
    parser.add_argument("--expect-seed", type=int, default=None, help="refuse the run unless its seed is this")
    parser.add_argument(
        "--expect-hash", default=None, help="refuse the run unless its recipe hash is this (`unmasking recipes`)"
    )


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--quiet``: where a command computes, and whether it shows progress bars."""
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
