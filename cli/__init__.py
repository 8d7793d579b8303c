"""The ``xidwatch`` command line: the node daemon, replay, and the SRE's query commands."""

from cli.main import app, main

__all__ = ["app", "main"]
