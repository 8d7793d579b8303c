"""The alert rules as an SRE loads them: promtool accepts them and their unit tests pass, every
alert has a firing unit test, and every alert carries what a page needs (a severity, a summary,
a description that says what to do, and a runbook link to a section of docs/alerts.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "xidwatch.rules.yml"
RULE_FILES = sorted((REPO / "alerts").glob("*.rules.yml"))  # the alerts, the recording rules
RULE_TESTS = sorted((REPO / "alerts" / "tests").glob("*.yml"))
DOC = REPO / "docs" / "alerts.md"
SEVERITIES = {"critical", "warning", "info"}
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: Debian's `prometheus` package has it "
    "(`make test-deps` as root, or apt-get install --no-install-recommends prometheus)",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _doc_anchors() -> set[str]:
    """GitHub's anchors for the headings of docs/alerts.md."""
    anchors = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@needs_promtool
@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_promtool_accepts_the_rule_file(rules: Path) -> None:
    result = _promtool("check", "rules", str(rules))
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert RULE_TESTS, "no alerts/tests/*.yml"
    result = _promtool("test", "rules", *(str(p) for p in RULE_TESTS))
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - fired == set(), "alerts without a firing promtool test"
    assert fired - names == set(), "promtool tests of alerts that do not exist"


def test_every_alert_has_a_severity_summary_description_and_runbook_in_the_docs() -> None:
    anchors = _doc_anchors()
    alerts = _alerts()
    assert len({a["alert"] for a in alerts}) == len(alerts), "duplicate alert names"
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, name
        assert "for" in alert, f"{name}: say `for:` explicitly, even 0m"
        notes = alert.get("annotations", {})
        assert notes.get("summary", "").strip(), f"{name}: no summary"
        assert len(notes.get("description", "")) > 80, f"{name}: description too thin to act on"
        url = notes.get("runbook_url", "")
        assert url == f"docs/alerts.md#{name.lower()}", f"{name}: runbook_url {url!r}"
        assert name.lower() in anchors, f"{name}: no `### {name}` section in docs/alerts.md"


def test_the_docs_describe_every_alert_and_the_required_job_label() -> None:
    doc = DOC.read_text(encoding="utf-8")
    text = RULES.read_text(encoding="utf-8")
    assert 'up{job="xidwatch"}' in text
    assert 'job="xidwatch"' in doc or "job_name: xidwatch" in doc
    documented = set(re.findall(r"^### (Xidwatch\w+)$", doc, flags=re.MULTILINE))
    assert documented == {a["alert"] for a in _alerts()}
