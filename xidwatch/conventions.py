"""How the ``xidwatch`` command speaks: global options anywhere, help types, one-line errors.

- The global options (``--log-level``, ``--log-json``/``--log-console``) may come before or
  after the command (``xidwatch xids --log-level debug``): :class:`XidwatchGroup` moves them
  in front of it before parsing.
- Help names value types the way command lines do (``PATH``, ``INTEGER``, ``TEXT``; nothing
  for a flag) rather than typer's Python annotations (``<bool>``, ``<list[Path]>``).
- :func:`error_line` turns any usage error into the one line ``xidwatch: error: ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = [
    "GLOBAL_FLAGS",
    "GLOBAL_VALUED",
    "XidwatchCommand",
    "XidwatchGroup",
    "error_line",
    "hoist_global_options",
]

GLOBAL_VALUED = frozenset({"--log-level"})  # global options that take a value
GLOBAL_FLAGS = frozenset({"--log-json", "--log-console"})


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """``args`` with the global options (and their values) moved to the front.

    Only up to a ``--`` (after it everything is an argument); a valued option's value goes
    with it, in either spelling (``--log-level debug``, ``--log-level=debug``).
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS or (name in GLOBAL_VALUED and "=" in arg):
            front.append(arg)
        elif arg in GLOBAL_VALUED and i + 1 < len(args):
            front += args[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def error_line(message: str) -> str:
    """The one line every error is printed as."""
    return "xidwatch: error: " + " ".join(message.split())


_LABELS = {int: "INTEGER", float: "FLOAT", str: "TEXT", bool: "BOOLEAN"}


def _type_label(param: Any) -> str | None:
    """``PATH``, ``FILE``, ``INTEGER``, ``FLOAT``, ``TEXT``, ``a|b``; None for a flag."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    desc = param.type_descriptor
    if desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    annotation = desc.annotation
    if desc.is_list:
        (annotation,) = get_args(annotation) or (str,)
    if desc.is_path or desc.is_file or annotation is Path:
        return str(desc.path_type).upper()
    return _LABELS.get(annotation, "TEXT")


class _Option(TyperOption):
    def display_type(self, ctx: Any) -> str:
        return _type_label(self) or ""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        label = _type_label(self)
        return f"{label}..." if label and self.nargs != 1 else label


class _Argument(TyperArgument):
    def display_type(self, ctx: Any) -> str:
        return _type_label(self) or ""

    def display_type_rich(self, ctx: Any) -> str | None:
        return _type_label(self)


def _conventional(params: list[Any]) -> list[Any]:
    """Swap typer's parameter classes for ours: the same objects, help types as above."""
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    return params


class XidwatchCommand(TyperCommand):
    """A subcommand whose help names value types as command lines do."""

    def get_params(self, ctx: typer.Context) -> list[Any]:  # type: ignore[override]
        return _conventional(super().get_params(ctx))


class XidwatchGroup(TyperGroup):
    """The top-level command: global options anywhere, conventional help types."""

    def get_params(self, ctx: typer.Context) -> list[Any]:  # type: ignore[override]
        return _conventional(super().get_params(ctx))

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        return super().parse_args(ctx, hoist_global_options(args))
