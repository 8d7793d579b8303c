"""The HTTP port's settings: where it listens, the bearer token ``/mcp`` requires, Host names.

They belong to the side that serves HTTP (the daemon's ``run`` and the gateway), not to
the daemon: built from ``xidwatch run``'s :class:`~watcher.settings.RunSettings`, or from
the gateway's flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from watcher.settings import RunSettings, parse_listen

__all__ = ["HttpSettings"]


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """One HTTP port: ``host``/``port`` (0: any free port), an optional token file, and the
    extra Host header names MCP accepts beside loopback and this host's names."""

    host: str
    port: int
    auth_token_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_listen(
        cls,
        listen: str,
        *,
        auth_token_file: Path | None = None,
        allowed_hosts: tuple[str, ...] = (),
    ) -> HttpSettings:
        """From ``HOST:PORT`` (already validated: a ValueError here is a caller's bug)."""
        host, port = parse_listen(listen)
        return cls(host, port, auth_token_file, allowed_hosts)

    @classmethod
    def of_run(cls, s: RunSettings) -> HttpSettings | None:
        """``xidwatch run``'s port; None with ``--no-http`` or an empty ``listen``."""
        if not s.http or not s.listen:
            return None
        return cls.from_listen(
            s.listen, auth_token_file=s.auth_token_file, allowed_hosts=s.allowed_hosts
        )
