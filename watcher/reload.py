"""Live config reload: a daemon part that watches the config file and applies safe changes.

Safe keys (:data:`watcher.settings.RELOADABLE`: sample interval, retention tiers, log
level) apply at once; any other changed key logs ``config_restart_required`` and is
ignored until a restart. A file that no longer validates keeps the settings in force and
logs ``config_invalid`` with the key at fault. The file's directory is watched, not the
file, so an editor's rename-over and a Kubernetes ConfigMap's symlink swap are both seen;
a change is acted on only when the file's bytes differ from the last ones read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog

from store.errors import XidwatchError
from watcher.config import DaemonConfig, daemon_config
from watcher.dirwatch import watch_directory
from watcher.settings import RELOADABLE, RunSettings, layered, read_settings_file

__all__ = ["ConfigReloader"]

log = structlog.get_logger("watcher.reload")


class ConfigReloader:
    """Re-reads ``path`` on change and hands the new :class:`DaemonConfig` to ``apply``.

    ``below`` and ``above`` are the layers the file sits between (over the settings'
    defaults; under the environment and flags), so a key set by a flag keeps the flag's
    value whatever the file says. ``current`` is the merged settings the daemon started
    with. ``started`` is set once the directory is watched: every change from then on is
    seen.
    """

    name = "config"

    def __init__(
        self,
        path: Path,
        *,
        below: RunSettings | None = None,
        above: RunSettings,
        current: RunSettings,
        apply: Callable[[DaemonConfig], None],
        debounce_ms: int = 500,
        force_polling: bool | None = None,
    ) -> None:
        self.path = path
        self.current = current
        self.reloads = 0
        self._below, self._above = below or RunSettings(), above
        self._apply = apply
        self._debounce_ms = debounce_ms
        self._force_polling = force_polling
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self._last = self._read_bytes()

    async def run(self) -> None:
        """Watch until :meth:`stop`; a watch that cannot start is logged, not fatal."""
        try:
            changes = watch_directory(
                self.path.parent,
                stop=self._stop,
                on_watching=self._watching,
                debounce=self._debounce_ms,
                force_polling=self._force_polling,
                watch_filter=None,
            )
            async for _ in changes:
                self.check()
        except (OSError, RuntimeError) as e:  # e.g. out of inotify watches
            log.error("config_watch_failed", path=str(self.path), error=str(e))
            await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    def _watching(self) -> None:
        log.info("config_watching", path=str(self.path))
        self.started.set()
        self.check()  # a change made before the watch was in place

    def check(self) -> None:
        """Reload if the file's content changed since it was last read."""
        data = self._read_bytes()
        if data == self._last:
            return
        if data is None:
            log.error(
                "config_invalid",
                path=str(self.path),
                error="cannot read the file",
                kept="old settings",
            )
            self._last = None
            return
        self._last = data
        self.reload()

    def reload(self) -> None:
        """Read the file again and apply what may change while running."""
        try:
            new = layered(self._below, read_settings_file(self.path), self._above)
            daemon_config(new, config_file=self.path)  # the whole file must still make sense
        except XidwatchError as e:
            log.error("config_invalid", path=str(self.path), error=str(e), kept="old settings")
            return
        before, after = self.current.model_dump(), new.model_dump()
        changed = sorted(k for k in after if after[k] != before[k])
        fixed = [k for k in changed if k not in RELOADABLE]
        live = {k: after[k] for k in changed if k in RELOADABLE}
        if fixed:
            log.warning(
                "config_restart_required",
                path=str(self.path),
                keys=fixed,
                message="restart to apply; ignored until then",
            )
        if not live:
            return
        self.current = self.current.model_copy(update=live)
        log.info("config_reloaded", path=str(self.path), changed=live)  # before a new log level
        self._apply(daemon_config(self.current, config_file=self.path))
        self.reloads += 1

    def _read_bytes(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None  # being replaced; the next event reads the new file
