"""Run settings: layers stack in order, and every error names the key and what is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_server.http_settings import HttpSettings
from store.retention import RetentionPolicy
from watcher.config import DaemonConfig, KubernetesConfig, daemon_config
from watcher.settings import (
    RunSettings,
    SettingsError,
    layered,
    parse_listen,
    parse_settings,
    read_settings_file,
)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xidwatch.yaml"
    path.write_text(text)
    return path


def _flags(**values: object) -> RunSettings:
    return parse_settings(values, origin=lambda key: f"--{key.replace('_', '-')}")


def test_a_later_layer_wins_key_by_key(tmp_path: Path) -> None:
    defaults = _flags(db="/var/lib/x.db", sample_interval=10.0, node=None)
    from_file = read_settings_file(
        _file(tmp_path, "sample_interval: 5\nnode: from-file\nretention_raw: 12h\n")
    )
    given = _flags(sample_interval=7.0)
    merged = layered(defaults, from_file, given)
    assert (merged.sample_interval, merged.node, merged.retention_raw) == (7.0, "from-file", "12h")
    assert merged.db == Path("/var/lib/x.db")


def test_an_unknown_key_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    path = _file(tmp_path, "sample_intervall: 5\n")
    with pytest.raises(SettingsError) as err:
        read_settings_file(path)
    message = str(err.value)
    assert f"config file {path}: sample_intervall: unknown setting; valid keys:" in message
    assert "sample_interval," in message and "retention_raw" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sample_interval: 0.5", "sample_interval: Input should be greater than or equal to 1"),
        ("retention_1m: soon", "retention_1m: 'soon' is not a duration"),
        ("log_level: loud", "log_level: 'loud': use debug, info, warning or error"),
        ("listen: localhost", "listen: 'localhost': use HOST:PORT"),
        ("flood_burst: 0", "flood_burst: Input should be greater than or equal to 1"),
        ("kmsg: maybe", "kmsg: Input should be a valid boolean"),
    ],
)
def test_a_bad_value_names_its_key_and_what_is_valid(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _file(tmp_path, text + "\n")
    with pytest.raises(SettingsError) as err:
        read_settings_file(path)
    assert str(err.value).startswith(f"config file {path}: {expected}")


def test_every_bad_key_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        read_settings_file(_file(tmp_path, "sample_interval: 0\nretention_raw: 2x\n"))
    assert "sample_interval:" in str(err.value) and "retention_raw:" in str(err.value)


def test_a_flag_or_variable_error_names_how_it_was_given() -> None:
    with pytest.raises(SettingsError, match=r"^XIDWATCH_RETENTION_RAW: '3q' is not a duration"):
        parse_settings({"retention_raw": "3q"}, origin=lambda key: "XIDWATCH_RETENTION_RAW")


def test_flag_spellings_lists_and_an_empty_file_are_accepted(tmp_path: Path) -> None:
    s = read_settings_file(
        _file(tmp_path, "sample-interval: 30\nlog_files: /var/log/kern.log\nlog_level: DEBUG\n")
    )
    assert (s.sample_interval, s.log_files, s.log_level) == (
        30.0,
        (Path("/var/log/kern.log"),),
        "debug",
    )
    assert read_settings_file(_file(tmp_path, "# nothing yet\n")) == RunSettings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("- a\n- b\n", "expected `key: value` lines"), ("a: [1\n", "is not valid YAML")],
)
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        read_settings_file(_file(tmp_path, text))


def test_a_missing_file_is_named() -> None:
    with pytest.raises(SettingsError, match=r"cannot read config file /nonexistent/x\.yaml"):
        read_settings_file(Path("/nonexistent/x.yaml"))


def test_the_daemon_config_carries_every_layered_setting() -> None:
    settings = layered(
        _flags(
            db="/tmp/x.db",
            sample_interval=2.0,
            retention_raw="1h",
            flood_per_minute=0.0,
            simulate=2,
            nvml=False,
            http=False,
            log_level="warning",
            accept_injected=True,
            allowed_hosts=["svc"],
        )
    )
    cfg = daemon_config(settings, config_file=Path("/etc/xidwatch.yaml"))
    assert cfg.db_path == Path("/tmp/x.db") and cfg.sample_interval_s == 2.0
    assert cfg.retention == RetentionPolicy(raw_ms=3_600_000)
    assert cfg.flood.per_minute == 0.0 and cfg.flood.burst == 20
    assert cfg.nvml  # simulated GPUs are sampled through NVML
    assert cfg.simulate is not None and cfg.simulate.gpus == 2
    assert HttpSettings.of_run(settings) is None  # http off
    assert (cfg.log_level, cfg.accept_injected) == ("warning", True)
    assert cfg.config_file == Path("/etc/xidwatch.yaml")


def test_a_scenario_without_simulated_gpus_is_refused() -> None:
    with pytest.raises(SettingsError, match="--scenario needs --simulate"):
        daemon_config(_flags(db="/tmp/x.db", scenario="thermal-runaway"))


def test_kubernetes_settings_reach_the_daemon_config(tmp_path: Path) -> None:
    from_file = read_settings_file(
        _file(
            tmp_path,
            "gpu_annotations: example.com/gpus\n"
            "k8s_event_actions: [reset_gpu, 'RESTART_BM,CONTACT_SUPPORT']\n"
            "node_condition_quiet: 30m\n",
        )
    )
    flags = _flags(
        db="x.db",
        host_proc="/host/proc",
        k8s_events=True,
        node_condition="GpuXidFatal",
        pod_refresh="10s",
        gpu_resources=["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"],
    )
    cfg = daemon_config(layered(from_file, flags))
    k = cfg.kubernetes
    assert cfg.host_proc == Path("/host/proc")
    assert (k.enabled, k.events, k.node_condition) == (True, True, "GpuXidFatal")
    assert k.event_actions == ("RESET_GPU", "RESTART_BM", "CONTACT_SUPPORT")
    assert (k.pod_refresh_s, k.node_condition_quiet_s) == (10.0, 1800.0)
    assert k.gpu_resources == ("nvidia.com/gpu", "nvidia.com/mig-1g.10gb")
    assert k.gpu_annotations == ("example.com/gpus",)


def test_kubernetes_defaults_are_attribution_on_and_no_writes() -> None:
    k = daemon_config(_flags(db="x.db")).kubernetes
    assert (k.enabled, k.events, k.node_condition) == (True, False, None)
    # Every label that leaves a GPU out of service, from the one place that knows them.
    assert k.event_actions == ("RESET_GPU", "RESTART_BM", "RESTART_VM", "WORKFLOW_XID_48")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"node_condition": "gpu fatal"}, "--node-condition: String should match pattern"),
        ({"pod_refresh": "often"}, "--pod-refresh: 'often' is not a duration"),
        ({"node_condition_quiet": "-1h"}, "--node-condition-quiet:"),
    ],
)
def test_bad_kubernetes_settings_are_named(values: dict[str, object], expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        _flags(**values)


def test_a_node_condition_without_events_is_refused() -> None:
    with pytest.raises(SettingsError, match="--node-condition needs --k8s-events"):
        daemon_config(_flags(db="x.db", node_condition="GpuXidFatal"))


def test_the_http_port_settings_are_built_from_the_same_model() -> None:
    http = HttpSettings.of_run(layered(_flags(listen="[::1]:0", allowed_hosts=["svc"])))
    assert http == HttpSettings("::1", 0, None, ("svc",))
    default = HttpSettings.of_run(RunSettings())
    assert default is not None and (default.host, default.port) == ("127.0.0.1", 9607)


@pytest.mark.parametrize("text", ["localhost", "host:port", "h:70000", ":"])
def test_one_host_port_parser_names_the_bad_value(text: str) -> None:
    with pytest.raises(ValueError, match=rf"^{text!r}: use HOST:PORT"):
        parse_listen(text)
    assert parse_listen(":9607") == ("0.0.0.0", 9607)


def test_a_layer_sets_only_the_keys_it_was_given() -> None:
    flags = _flags(sample_interval=30.0)
    assert flags.model_fields_set == {"sample_interval"}
    assert flags.retention_raw == RunSettings().retention_raw  # the default, not "set"
    merged = layered(RunSettings.model_validate({"sample_interval": 5.0, "node": "f"}), flags)
    assert (merged.sample_interval, merged.node) == (30.0, "f")


def test_the_daemon_config_defaults_are_the_settings_defaults() -> None:
    db = Path("/tmp/x.db")
    assert daemon_config(RunSettings(db=db)) == DaemonConfig(db_path=db)
    assert daemon_config(RunSettings()).kubernetes == KubernetesConfig()
    assert RunSettings().retention_raw == "2d"  # RetentionPolicy's 48 h, in its words
