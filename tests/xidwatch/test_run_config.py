"""``xidwatch run`` configuration: flags > XIDWATCH_* > config file > defaults, and live reload."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import typer.main
from typer.testing import CliRunner

import xidwatch.run
from tests.waiting import wait_until
from watcher.config import DaemonConfig
from watcher.daemon import Daemon
from watcher.reload import ConfigReloader
from watcher.settings import RunSettings, SettingsError
from xidwatch.main import app


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    saved = structlog.get_config()  # the command configures logging for the whole process
    yield
    structlog.configure(**saved)


def _configure(
    monkeypatch: pytest.MonkeyPatch, *args: str, env: dict[str, str] | None = None
) -> tuple[DaemonConfig, list[object]]:
    """What ``xidwatch run ARGS`` would run, without running it."""
    built: list[tuple[Daemon, list[object]]] = []

    async def capture(daemon: Daemon, services: list[object]) -> None:
        built.append((daemon, services))

    monkeypatch.setattr(xidwatch.run, "_run_daemon", capture)
    result = CliRunner().invoke(app, ["run", *args], env=env)
    if result.exception is not None:
        raise result.exception
    ((daemon, services),) = built
    return daemon.config, services


def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "xidwatch.yaml"
    path.write_text(
        "node: file-node\nsample_interval: 5\nretention_raw: 12h\nflood_burst: 3\n"
        "db: /from/file.db\n"
    )
    config, services = _configure(
        monkeypatch,
        "--config",
        str(path),
        "--node",
        "flag-node",
        "--no-http",
        env={
            "XIDWATCH_NODE": "env-node",
            "XIDWATCH_SAMPLE_INTERVAL": "7",
            "XIDWATCH_DB": str(tmp_path / "env.db"),
        },
    )
    assert config.node == "flag-node"  # flag > env > file
    assert config.sample_interval_s == 7.0  # env > file
    assert config.db_path == tmp_path / "env.db"  # env > file
    assert config.retention.raw_ms == 12 * 3_600_000  # file > default
    assert config.flood.burst == 3
    assert config.retention.minute_ms == 30 * 86_400_000  # default
    assert config.config_file == path
    (reloader,) = services
    assert isinstance(reloader, ConfigReloader)


def test_the_file_can_be_named_by_xidwatch_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "xidwatch.yaml"
    path.write_text("accept_injected: true\nlog_level: warning\n")
    config, _ = _configure(
        monkeypatch,
        "--db",
        str(tmp_path / "x.db"),
        "--no-http",
        env={"XIDWATCH_CONFIG": str(path)},
    )
    assert config.accept_injected and config.log_level == "warning"


def test_a_global_log_level_flag_beats_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "xidwatch.yaml"
    path.write_text("log_level: error\n")
    built: list[Daemon] = []

    async def capture(daemon: Daemon, services: list[object]) -> None:
        built.append(daemon)

    monkeypatch.setattr(xidwatch.run, "_run_daemon", capture)
    args = ["--log-level", "debug", "run", "--db", str(tmp_path / "x.db"), "--config", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert built[0].config.log_level == "debug"


def test_without_any_setting_the_daemon_gets_its_production_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    db = tmp_path / "x.db"
    config, services = _configure(monkeypatch, "--db", str(db))
    assert config == DaemonConfig(db_path=db)  # the settings' defaults are DaemonConfig's
    assert [s.name for s in services] == ["http"]  # type: ignore[attr-defined]


def test_a_bad_environment_value_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=r"^XIDWATCH_RETENTION_1H: '1y' is not a duration"):
        _configure(monkeypatch, "--db", str(tmp_path / "x.db"), env={"XIDWATCH_RETENTION_1H": "1y"})


def _wait_for_log(logs: Path, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def logged() -> dict[str, Any] | None:
        events = (json.loads(line) for line in logs.read_text().splitlines())
        return next((e for e in events if predicate(e)), None)

    return wait_until(logged, 20, message=lambda: f"no such log line in:\n{logs.read_text()}")


@pytest.mark.slow
def test_the_running_daemon_applies_a_changed_file_and_warns_about_the_rest(
    tmp_path: Path,
) -> None:
    path, logs = tmp_path / "xidwatch.yaml", tmp_path / "daemon.log"
    path.write_text("sample_interval: 1\nlisten: 127.0.0.1:0\n")
    argv = [sys.executable, "-m", "xidwatch", "--log-json", "run", "--db", str(tmp_path / "x.db")]
    argv += ["--simulate", "1", "--no-kmsg", "--config", str(path)]
    with logs.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait_for_log(logs, lambda e: e["event"] == "config_watching")  # the watch is in place
        path.write_text("sample_interval: 2\nlisten: 127.0.0.1:9\nlog_level: warning\n")
        reloaded = _wait_for_log(logs, lambda e: e["event"] == "config_reloaded")
        assert reloaded["changed"] == {"sample_interval": 2.0, "log_level": "warning"}
        restart = _wait_for_log(logs, lambda e: e["event"] == "config_restart_required")
        assert restart["keys"] == ["listen"]
        path.write_text("sample_interval: nope\n")
        invalid = _wait_for_log(logs, lambda e: e["event"] == "config_invalid")
        assert "sample_interval" in invalid["error"]
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    lines = [json.loads(line) for line in logs.read_text().splitlines()]
    at = next(i for i, e in enumerate(lines) if e["event"] == "config_reloaded")
    after = [e["event"] for e in lines[at + 1 :] if e["level"] == "info"]
    assert after == []  # info lines (daemon_stopping, ...) stopped at the new level


def _run_command() -> Any:
    """The click command ``xidwatch run`` (typer's click: typed loosely here)."""
    group: Any = typer.main.get_command(app)
    return group.get_command(group.context_class(group, info_name="xidwatch"), "run")


def test_every_setting_is_an_option_of_run_unset_by_default_with_its_derived_variable() -> None:
    options = {p.name: p for p in _run_command().params if p.name != "config"}
    assert set(options) == set(RunSettings.model_fields) - {"log_level"}  # that one is global
    for key, option in options.items():
        assert option.envvar == "XIDWATCH_" + key.upper(), key
        assert option.default is None, key  # only what the user gives overrides the layers below
        assert option.help == RunSettings.model_fields[key].description, key


def test_no_command_writes_a_variable_name_by_hand() -> None:
    sources = Path(xidwatch.run.__file__).parent.glob("*.py")
    hand_written = [p.name for p in sources if re.search(r'envvar\s*=\s*"', p.read_text())]
    assert hand_written == []


def test_an_option_given_the_default_value_still_beats_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "xidwatch.yaml"
    path.write_text("sample_interval: 30\nkmsg: false\n")
    args = ["--db", str(tmp_path / "x.db"), "--config", str(path), "--no-http"]
    config, _ = _configure(monkeypatch, *args, "--sample-interval", "10", "--kmsg")
    assert (config.sample_interval_s, config.kmsg) == (10.0, True)


def test_a_bad_flag_value_is_named_by_its_flag(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=r"^--sample-interval: Input should be greater than"):
        _configure(monkeypatch, "--db", str(tmp_path / "x.db"), "--sample-interval", "0.5")
