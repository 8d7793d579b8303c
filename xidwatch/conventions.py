"""How the ``xidwatch`` command speaks: global options anywhere, help types, one-line errors.

- The global options (``--log-level``, ``--log-json``/``--log-console``) may come before or
  after the command (``xidwatch xids --log-level debug``): :class:`XidwatchGroup` moves them
  in front of it before parsing.
- Help names value types the way command lines do (``PATH``, ``INTEGER``, ``TEXT``; nothing
  for a flag) rather than typer's Python annotations (``<bool>``, ``<list[Path]>``).
- :func:`error_line` turns any usage error into the one line ``xidwatch: error: ...``.
- Commands load on first use (:class:`LazyCommand`): ``xidwatch explain 79`` imports the
  catalog, not the MCP SDK, uvicorn or the Kubernetes client; ``--help`` lists every
  command from its summary without importing any.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, get_args

import typer
import typer.main
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = [
    "GLOBAL_FLAGS",
    "GLOBAL_VALUED",
    "LazyCommand",
    "XidwatchCommand",
    "XidwatchGroup",
    "error_line",
    "hoist_global_options",
    "option_names",
]

GLOBAL_VALUED = frozenset({"--log-level"})  # global options that take a value
GLOBAL_FLAGS = frozenset({"--log-json", "--log-console"})


def hoist_global_options(
    args: Sequence[str],
    *,
    valued: frozenset[str] = GLOBAL_VALUED,
    flags: frozenset[str] = GLOBAL_FLAGS,
) -> list[str]:
    """``args`` with the global options (and their values) moved to the front.

    Only up to a ``--`` (after it everything is an argument); a valued option's value goes
    with it, in either spelling (``--log-level debug``, ``--log-level=debug``). ``valued``
    and ``flags``: another group's own options (:func:`option_names`).
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
        if arg in flags or (name in valued and "=" in arg):
            front.append(arg)
        elif arg in valued and i + 1 < len(args):
            front += args[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def option_names(params: Sequence[Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The names of a command's options: (those taking a value, the flags)."""
    valued: set[str] = set()
    flags: set[str] = set()
    for param in params:
        if getattr(param, "param_type_name", "") != "option":
            continue  # an argument
        names = [*param.opts, *param.secondary_opts]
        (flags if getattr(param, "is_flag", False) else valued).update(names)
    return frozenset(valued), frozenset(flags)


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


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """A command whose module is imported when it runs: ``target`` is ``module:function``
    (a typer command function), ``summary`` the line ``xidwatch --help`` lists it with
    (the first paragraph of the function's docstring; a test keeps the two equal).
    ``logs`` False: it never logs, so logging is not set up for it."""

    target: str
    summary: str
    logs: bool = True

    def load(self, name: str) -> Any:
        """The click command, built by typer from the function (typer's click: Any)."""
        module, _, function = self.target.partition(":")
        one = typer.Typer(add_completion=False)
        one.command(name=name, cls=XidwatchCommand)(
            getattr(importlib.import_module(module), function)
        )
        command = typer.main.get_command(one)
        command.short_help = self.summary
        return command


class XidwatchGroup(TyperGroup):
    """The top-level command: global options anywhere, conventional help types, and the
    commands of :attr:`lazy_commands` loaded on first use."""

    lazy_commands: ClassVar[Mapping[str, LazyCommand]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listing = False
        for name, lazy in self.lazy_commands.items():  # listed and suggested, not loaded
            self.commands.setdefault(name, TyperCommand(name=name, short_help=lazy.summary))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        lazy = self.lazy_commands.get(cmd_name)
        if lazy is None or self._listing:
            return super().get_command(ctx, cmd_name)
        command = self.commands[cmd_name]
        if command.callback is None:  # not loaded yet
            command = self.commands[cmd_name] = lazy.load(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """List the commands by their summaries, importing none of them."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_params(self, ctx: typer.Context) -> list[Any]:  # type: ignore[override]
        return _conventional(super().get_params(ctx))

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        return super().parse_args(ctx, hoist_global_options(args))
