"""Config reload: safe keys apply at once, others wait for a restart, bad files change nothing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

from structlog.testing import capture_logs

from store.retention import RetentionPolicy
from tests.waiting import wait_until_async
from watcher.config import DaemonConfig, SimulationSpec
from watcher.daemon import Daemon
from watcher.reload import ConfigReloader
from watcher.settings import RunSettings, layered, parse_settings, read_settings_file

START = "sample_interval: 10\nretention_raw: 48h\nlog_level: info\n"


def _reloader(
    tmp_path: Path, *, above: RunSettings | None = None, debounce_ms: int = 500
) -> tuple[ConfigReloader, list[DaemonConfig], Path]:
    path = tmp_path / "xidwatch.yaml"
    path.write_text(START)
    below = parse_settings({"db": tmp_path / "x.db"}, origin=str)
    above = above or RunSettings()
    applied: list[DaemonConfig] = []
    reloader = ConfigReloader(
        path,
        below=below,
        above=above,
        current=layered(below, read_settings_file(path), above),
        apply=applied.append,
        debounce_ms=debounce_ms,
    )
    return reloader, applied, path


def test_safe_keys_apply_and_the_others_log_restart_to_apply(tmp_path: Path) -> None:
    reloader, applied, path = _reloader(tmp_path)
    path.write_text("sample_interval: 5\nretention_raw: 1h\nlog_level: debug\ndb: /elsewhere.db\n")
    with capture_logs() as logs:
        reloader.check()
    (config,) = applied
    assert config.sample_interval_s == 5.0
    assert config.retention.raw_ms == 3_600_000
    assert config.log_level == "debug"
    assert config.db_path == tmp_path / "x.db"  # unsafe: kept until a restart
    (warning,) = [e for e in logs if e["event"] == "config_restart_required"]
    assert warning["keys"] == ["db"] and "restart to apply" in warning["message"]
    (done,) = [e for e in logs if e["event"] == "config_reloaded"]
    assert done["changed"] == {"sample_interval": 5.0, "retention_raw": "1h", "log_level": "debug"}


def test_an_invalid_file_keeps_the_settings_in_force_and_names_the_key(tmp_path: Path) -> None:
    reloader, applied, path = _reloader(tmp_path)
    before = reloader.current
    path.write_text("sample_interval: 5\nretention_raw: forever\n")
    with capture_logs() as logs:
        reloader.check()
    assert applied == [] and reloader.current == before
    (error,) = [e for e in logs if e["event"] == "config_invalid"]
    assert error["log_level"] == "error"
    assert "retention_raw: 'forever' is not a duration" in error["error"]


def test_a_key_a_flag_set_does_not_follow_the_file(tmp_path: Path) -> None:
    pinned = parse_settings({"sample_interval": 30.0}, origin=str)
    reloader, applied, path = _reloader(tmp_path, above=pinned)
    path.write_text(START.replace("10", "5"))
    reloader.check()
    assert applied == []
    assert reloader.current.sample_interval == 30.0


def test_an_unchanged_file_is_not_reloaded(tmp_path: Path) -> None:
    reloader, applied, path = _reloader(tmp_path)
    path.write_text(START)  # touched, same bytes
    reloader.check()
    path.write_text(START.replace("info", "warning"))
    reloader.check()
    reloader.check()
    assert [c.log_level for c in applied] == ["warning"]


async def test_a_file_replaced_by_rename_is_seen_and_applied(tmp_path: Path) -> None:
    reloader, applied, path = _reloader(tmp_path, debounce_ms=50)
    task = asyncio.create_task(reloader.run())
    try:
        async with asyncio.timeout(10):
            await reloader.started.wait()  # the watch is in place
        staged = tmp_path / ".xidwatch.yaml.new"
        staged.write_text(START.replace("10", "2"))
        os.replace(staged, path)  # how editors and ConfigMap updates replace a file
        await wait_until_async(lambda: applied, 10)
    finally:
        reloader.stop()
        async with asyncio.timeout(5):
            await task  # stop() ends the watch promptly
    assert applied[-1].sample_interval_s == 2.0


async def test_reconfigure_changes_the_live_sampler_interval_and_retention(
    db_path: Path,
) -> None:
    config = DaemonConfig(
        db_path=db_path,
        node="n",
        simulate=SimulationSpec(1),
        sample_interval_s=0.05,
        checkpoint_interval_s=0.05,
    )
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    def samples() -> int:
        with sqlite3.connect(db_path) as conn:
            return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])

    try:
        await daemon.ready.wait()
        await wait_until_async(lambda: samples() >= 20, 10)
        daemon.reconfigure(replace(config, sample_interval_s=0.5, retention=RetentionPolicy(1)))
        assert daemon.sampler is not None and daemon.sampler.interval_s == 0.5
        assert daemon.config.retention.raw_ms == 1
        await wait_until_async(lambda: samples() < 20, 10)  # retention runs now, not in an hour
    finally:
        stop.set()
        await task


async def test_a_change_made_before_the_watch_began_is_applied_once_watching(
    tmp_path: Path,
) -> None:
    reloader, applied, path = _reloader(tmp_path, debounce_ms=50)
    path.write_text(START.replace("10", "3"))  # after the reloader read it, before the watch
    task = asyncio.create_task(reloader.run())
    try:
        async with asyncio.timeout(10):
            await reloader.started.wait()
        assert [c.sample_interval_s for c in applied] == [3.0]  # no further change needed
    finally:
        reloader.stop()
        async with asyncio.timeout(5):
            await task
