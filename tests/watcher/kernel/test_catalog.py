"""The packaged XID catalog: agreement with NVIDIA's table, unknown codes, loading."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.actions import LABEL_TEXT
from store.records import EventKind
from watcher.errors import CatalogError
from watcher.kernel.catalog import UNKNOWN_ACTION, XidCatalog, XidInfo, default_catalog

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "xid-actions.csv"


def _reference_rows() -> list[dict[str, str]]:
    with FIXTURE.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


REFERENCE_ROWS = _reference_rows()


def test_the_reference_fixture_lists_codes_1_to_162() -> None:
    assert [int(row["xid"]) for row in REFERENCE_ROWS] == list(range(1, 163))


def test_the_packaged_catalog_has_exactly_the_reference_codes() -> None:
    catalog = default_catalog()

    assert [info.code for info in catalog] == [int(row["xid"]) for row in REFERENCE_ROWS]
    assert len(catalog) == len(REFERENCE_ROWS)


@pytest.mark.parametrize("row", REFERENCE_ROWS, ids=lambda row: f"xid{row['xid']}")
def test_each_reference_code_has_the_same_mnemonic_action_and_fatality(
    row: dict[str, str],
) -> None:
    info = default_catalog().lookup(int(row["xid"]))

    assert info.known is True
    assert info.kind == "xid"
    assert info.code == int(row["xid"])
    assert info.mnemonic == (row["mnemonic"] or None)
    assert info.immediate_action == row["immediate_action"]
    assert row["fatality"] in ("FATAL", "NONFATAL")
    assert info.fatal is (row["fatality"] == "FATAL")


def test_code_162_has_no_mnemonic() -> None:
    assert default_catalog().lookup(162).mnemonic is None


def test_every_action_label_used_by_an_entry_has_text() -> None:
    catalog = default_catalog()
    used = {info.immediate_action for info in catalog} | {
        info.investigatory_action for info in catalog if info.investigatory_action is not None
    }

    missing = sorted(label for label in used if not catalog.actions.get(label, "").strip())

    assert missing == []
    for label in used:
        assert catalog.action_text(label) == catalog.actions[label]


def test_every_cause_used_by_an_entry_is_defined() -> None:
    catalog = default_catalog()
    used = {cause for info in catalog for cause in info.causes}

    assert used <= set(catalog.causes)
    assert set(catalog.causes) == {"HW", "Drv", "App", "SysMem", "Bus", "Therm", "FB"}


def test_every_entry_has_a_title_and_description() -> None:
    for info in default_catalog():
        assert info.title.strip(), info.code
        assert info.description.strip(), info.code


ALL_CAUSES = ("HW", "Drv", "App", "SysMem", "Bus", "Therm", "FB")
ALL_BUT_APP = tuple(c for c in ALL_CAUSES if c != "App")


@pytest.mark.parametrize(
    ("code", "investigatory_action", "causes"),
    [
        pytest.param(8, "CONTACT_SUPPORT", ("Drv", "App", "Bus", "Therm"), id="8"),
        pytest.param(13, "WORKFLOW_XID_13", ALL_CAUSES, id="13"),
        pytest.param(31, "WORKFLOW_XID_31", ("HW", "Drv", "App"), id="31"),
        pytest.param(32, "CHECK_APP_CUDA", ("Drv", "SysMem", "Bus", "Therm", "FB"), id="32"),
        pytest.param(45, "RESTART_FM", ("Drv",), id="45"),
        pytest.param(48, "WORKFLOW_XID_48", ("HW",), id="48"),
        pytest.param(54, "CONTACT_SUPPORT", (), id="54"),
        pytest.param(63, "IGNORE", ("HW", "Drv", "FB"), id="63"),
        pytest.param(74, "CONTACT_SUPPORT", ("HW", "Drv", "Bus"), id="74"),
        pytest.param(79, "CONTACT_SUPPORT", ("HW", "Drv", "SysMem", "Bus", "Therm"), id="79"),
        pytest.param(94, "IGNORE", ("HW", "Drv", "FB"), id="94"),
        pytest.param(95, "IGNORE", ("HW", "Drv", "FB"), id="95"),
        pytest.param(109, "CONTACT_SUPPORT", ALL_CAUSES, id="109"),
        pytest.param(110, "INVESTIGATE_SW", ("HW",), id="110"),
        pytest.param(119, "INVESTIGATE_SW", ALL_BUT_APP, id="119"),
        pytest.param(120, "INVESTIGATE_SW", ALL_BUT_APP, id="120"),
        pytest.param(136, "INVESTIGATE_LINK_SI", (), id="136"),
        pytest.param(144, "WORKFLOW_NVLINK5_ERR", (), id="144"),
        pytest.param(150, "WORKFLOW_NVLINK5_ERR", (), id="150"),
        pytest.param(154, None, (), id="154"),
        pytest.param(155, "INVESTIGATE_SW_USER", (), id="155"),
    ],
)
def test_main_codes_carry_the_investigatory_action_and_causes_from_the_reference(
    code: int, investigatory_action: str | None, causes: tuple[str, ...]
) -> None:
    info = default_catalog().lookup(code)

    assert info.investigatory_action == investigatory_action
    assert set(info.causes) == set(causes)
    assert len(info.causes) == len(set(info.causes))


@pytest.mark.parametrize("code", [0, 163, 999, -1, 10**12], ids=lambda c: f"code{c}")
def test_an_unknown_code_gets_an_explicit_unknown_entry(code: int) -> None:
    info = default_catalog().lookup(code)

    assert info.known is False
    assert info.code == code
    assert info.kind == "xid"
    assert info.immediate_action == UNKNOWN_ACTION
    assert info.fatal is None
    assert str(code) in info.title
    assert "nvidia-bug-report" in default_catalog().action_text(UNKNOWN_ACTION)


@pytest.mark.parametrize("code", [20034, 79, 1], ids=lambda c: f"sxid{c}")
def test_an_sxid_lookup_gives_an_nvswitch_entry_not_the_xid_with_that_number(code: int) -> None:
    info = default_catalog().lookup(code, "sxid")

    assert info.kind == "sxid"
    assert info.known is False
    assert info.code == code
    assert "NVSwitch" in info.title
    assert info.immediate_action == UNKNOWN_ACTION
    assert info != default_catalog().lookup(code)


@settings(max_examples=300, deadline=None, database=None)
@given(code=st.integers(), kind=st.sampled_from(["xid", "sxid"]))
def test_lookup_never_raises_and_always_answers_for_the_code_asked(
    code: int, kind: EventKind
) -> None:
    info = default_catalog().lookup(code, kind)

    assert isinstance(info, XidInfo)
    assert info.code == code
    assert info.kind == kind
    assert info.known is (kind == "xid" and 1 <= code <= 162)


MINIMAL_ENTRY: dict[str, object] = {
    "code": 7,
    "mnemonic": "SEVEN",
    "title": "Seven",
    "description": "The seventh.",
    "immediate_action": "RESET_GPU",
    "fatal": True,
    "causes": ["HW"],
}
MINIMAL_CATALOG: dict[str, object] = {
    "causes": {"HW": "hardware"},
    "entries": [MINIMAL_ENTRY],
}


def test_from_json_reads_a_minimal_catalog() -> None:
    catalog = XidCatalog.from_json(json.dumps(MINIMAL_CATALOG))

    info = catalog.lookup(7)
    assert (info.known, info.mnemonic, info.immediate_action, info.fatal) == (
        True,
        "SEVEN",
        "RESET_GPU",
        True,
    )
    assert info.investigatory_action is None
    assert info.causes == ("HW",)
    assert catalog.action_text("RESET_GPU") == LABEL_TEXT["RESET_GPU"]
    assert len(catalog) == 1


def test_action_texts_live_in_one_place_not_in_the_data_file() -> None:
    """Before: the catalog's texts and store/xid_workflows.ACTION_TEXT said different things."""
    data = resources.files("watcher.kernel").joinpath("data/xid_catalog.json").read_text("utf-8")
    assert "actions" not in json.loads(data)
    assert default_catalog().actions is LABEL_TEXT


def _without(key: str) -> str:
    return json.dumps({k: v for k, v in MINIMAL_CATALOG.items() if k != key})


def _entry_with(**changes: object) -> str:
    entry = {**MINIMAL_ENTRY, **changes}
    return json.dumps({**MINIMAL_CATALOG, "entries": [entry]})


def _entry_without(key: str) -> str:
    entry = dict(MINIMAL_ENTRY)
    del entry[key]
    return json.dumps({**MINIMAL_CATALOG, "entries": [entry]})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("{not json", id="syntax-error"),
        pytest.param("null", id="null"),
        pytest.param("[]", id="array"),
        pytest.param(_without("entries"), id="no-entries"),
        pytest.param(_without("causes"), id="no-causes"),
        pytest.param(json.dumps({**MINIMAL_CATALOG, "entries": 5}), id="entries-not-a-list"),
        pytest.param(json.dumps({**MINIMAL_CATALOG, "entries": [1]}), id="entry-not-an-object"),
        pytest.param(_entry_with(code="seven"), id="code-not-a-number"),
        pytest.param(_entry_without("mnemonic"), id="entry-without-mnemonic"),
        pytest.param(_entry_without("immediate_action"), id="entry-without-action"),
        pytest.param(_entry_without("fatal"), id="entry-without-fatal"),
    ],
)
def test_from_json_raises_catalog_error_on_a_malformed_document(text: str) -> None:
    with pytest.raises(CatalogError, match="malformed"):
        XidCatalog.from_json(text)


def test_default_catalog_is_loaded_once() -> None:
    assert default_catalog() is default_catalog()
