"""The ``xidwatch`` command: one typer app; each command is a thin shell over the packages.

Each command lives in its own module, imported only when that command runs
(:class:`~xidwatch.conventions.LazyCommand`), so ``xidwatch explain 79`` starts without
the MCP SDK, uvicorn or the Kubernetes client.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Mapping
from typing import Annotated, ClassVar

import typer

from store.errors import XidwatchError
from watcher.log_levels import DEFAULT_LOG_LEVEL, LOG_LEVELS, LOG_LEVELS_TEXT
from xidwatch.conventions import LazyCommand, XidwatchGroup, error_line
from xidwatch.options import env_name

__all__ = ["app", "main"]


class _Xidwatch(XidwatchGroup):
    """The commands, in the order ``--help`` lists them."""

    lazy_commands: ClassVar[Mapping[str, LazyCommand]] = {
        "run": LazyCommand(
            "xidwatch.run:run",
            "Run the node daemon: record every XID and sample every GPU until SIGTERM.",
        ),
        "replay": LazyCommand(
            "xidwatch.replay:replay",
            "Ingest saved kernel log captures; replaying the same capture again stores "
            "nothing new.",
        ),
        "xids": LazyCommand(
            "xidwatch.xids:xids",
            "List stored XID events, newest first. Bursts show their exact count.",
        ),
        "explain": LazyCommand(
            "xidwatch.explain:explain",
            "What an XID means and what to do about it, from the packaged catalog.",
            logs=False,
        ),
        "demo": LazyCommand(
            "xidwatch.demo:demo",
            "A tour: replay a sample incident, run the daemon on simulated GPUs, show what "
            "it kept.",
        ),
        "inject": LazyCommand(
            "xidwatch.inject:inject",
            "Write a synthetic, marked test XID to the kernel log (root; see run "
            "--accept-injected).",
        ),
        "trend": LazyCommand(
            "xidwatch.telemetry:trend",
            "A metric per GPU over time: a chart, XIDs, the latest reading against a "
            "threshold, slope.",
        ),
        "health": LazyCommand(
            "xidwatch.telemetry:health",
            "Per GPU one verdict (cause, the one action, why, the steps) and the node's verdict.",
        ),
        "mcp": LazyCommand(
            "xidwatch.serving:mcp",
            "Serve the MCP tools over stdio (Claude Desktop, Cursor, ...), reading the store.",
        ),
        "gateway": LazyCommand(
            "xidwatch.gateway:gateway",
            "Serve MCP for the whole cluster: every node daemon's tools (with a node "
            "argument) and fleet-wide questions, found through the Kubernetes API or named "
            "with --node.",
        ),
        "ack": LazyCommand(
            "xidwatch.telemetry:ack",
            "Acknowledge a GPU's fatal XIDs: health then shows them as cleared, by whom and why.",
        ),
    }


app = typer.Typer(
    name="xidwatch",
    cls=_Xidwatch,
    help="Record NVIDIA XID errors and GPU telemetry on a node, and answer questions about them. "
    "The global options may also follow the command (xidwatch xids --log-level debug).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool | None) -> None:
    if value:
        from watcher.prometheus import installed_version  # prometheus_client: only here

        typer.echo(f"xidwatch {installed_version()}")
        raise typer.Exit()


@app.callback()
def _setup(
    ctx: typer.Context,
    log_level: Annotated[
        str | None,
        typer.Option(
            envvar=env_name("log_level"),
            help=f"{LOG_LEVELS_TEXT}; default {DEFAULT_LOG_LEVEL}.",
            show_default=False,
        ),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-console", help="Log format; default JSON unless a TTY."),
    ] = None,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    level = (log_level or DEFAULT_LOG_LEVEL).lower()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(
            f"{log_level!r}: use {LOG_LEVELS_TEXT}",
            param_hint="--log-level",
        )
    command = _Xidwatch.lazy_commands.get(ctx.invoked_subcommand or "")
    if command is not None and not command.logs:
        return  # structlog (with asyncio and rich) would cost more than the command
    if log_json is None and ctx.invoked_subcommand == "demo":
        log_json = False  # the tour is read by a person, even through a pipe
    from watcher.logs import configure_logging  # structlog: only for commands that log

    configure_logging(level, json=log_json)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: every error is one line ``xidwatch: error: ...``, exit 2.

    A usage error (typer's), an error we raise on purpose (XidwatchError) and the host's
    refusals (a file that cannot be opened, SQLite saying no) alike; a bug still shows its
    traceback. ``health`` exits with its own status (see docs/cli.md).
    """
    try:
        status = app(args=args, standalone_mode=False)
    except typer.TyperException as e:  # a usage error: bad option, value or command
        typer.echo(error_line(e.format_message()), err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("xidwatch: aborted", err=True)
        sys.exit(1)
    except (XidwatchError, OSError, sqlite3.Error) as e:
        typer.echo(error_line(str(e) or type(e).__name__), err=True)
        sys.exit(2)
    sys.exit(status if isinstance(status, int) else 0)
