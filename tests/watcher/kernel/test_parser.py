"""The XID/SXid line parser: every published kernel log shape, near-misses, and properties."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.kernel.parser import FALLEN_OFF_BUS_XID, ParsedXid, normalize_pci, parse_xid

PROPERTY = settings(max_examples=300, deadline=None, database=None)

VALID_LINE = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus."


@dataclass(frozen=True)
class Shape:
    """One kernel log line and the fields the parser must read from it."""

    line: str
    xid: int
    pci: str
    message: str
    pid: int | None = None
    process: str | None = None
    mig_gi: int | None = None
    mig_ci: int | None = None


XID_SHAPES = [
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.",
            79,
            "00000000:3B:00.0",
            "GPU has fallen off the bus.",
            pid=1234,
            process="python3",
        ),
        id="current-driver-with-pid-and-name",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:01:00): 43, Ch 00000018",
            43,
            "00000000:01:00.0",
            "Ch 00000018",
        ),
        id="current-driver-without-pid-or-name",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:b7:00): 31, pid='<unknown>', name=<unknown>, "
            "Ch 00000008, intr 00000000. MMU Fault: ENGINE GRAPHICS",
            31,
            "00000000:B7:00.0",
            "Ch 00000008, intr 00000000. MMU Fault: ENGINE GRAPHICS",
        ),
        id="r5xx-quoted-unknown-pid-and-unknown-name",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (0000:03:00): 13, Ch 0000000b, engmask 00000101, intr 10000000",
            13,
            "00000000:03:00.0",
            "Ch 0000000b, engmask 00000101, intr 10000000",
        ),
        id="very-old-no-pci-prefix-ch-engmask-intr",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (0000:02:00): 8, Channel 00000001",
            8,
            "00000000:02:00.0",
            "Channel 00000001",
        ),
        id="very-old-no-pci-prefix-channel",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00 GPU-I:01 GPU-CI:00): 43, pid=555, name=trainer, Ch 00000018",
            43,
            "00000000:3B:00.0",
            "Ch 00000018",
            pid=555,
            process="trainer",
            mig_gi=1,
            mig_ci=0,
        ),
        id="mig-gpu-instance-and-compute-instance",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00 GPU-I:07): 31, pid=42, name=a.out, MMU Fault",
            31,
            "00000000:3B:00.0",
            "MMU Fault",
            pid=42,
            process="a.out",
            mig_gi=7,
        ),
        id="mig-gpu-instance-only",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00): 45, pid=2345, name=python3, Ch 00000010, "
            "caused by previous Xid 79",
            45,
            "00000000:3B:00.0",
            "Ch 00000010, caused by previous Xid 79",
            pid=2345,
            process="python3",
        ),
        id="xid45-caused-by-previous-xid",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) "
            "to 0x2 (Node Reboot Required)",
            154,
            "00000000:3B:00.0",
            "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)",
        ),
        id="xid154-recovery-action",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:b7:00): 74, pid=<unknown>, name=<unknown>, NVLink: fatal "
            "error detected on link 12(0x0, 0x0, 0x10000, 0x0, 0x0, 0x1000000, 0x0)",
            74,
            "00000000:B7:00.0",
            "NVLink: fatal error detected on link 12(0x0, 0x0, 0x10000, 0x0, 0x0, 0x1000000, 0x0)",
        ),
        id="xid74-seven-hex-registers",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3B:00): 48, pid=99, name=nccl-tests, An uncorrectable "
            "double bit error (DBE) has been detected on GPU in the framebuffer",
            48,
            "00000000:3B:00.0",
            "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer",
            pid=99,
            process="nccl-tests",
        ),
        id="uppercase-hex-address",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00): 79 pid=1234, name=python3, GPU has fallen off the bus.",
            79,
            "00000000:3B:00.0",
            "GPU has fallen off the bus.",
            pid=1234,
            process="python3",
        ),
        id="no-comma-after-the-code",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00): 79 pid=1234 name=python3 GPU has fallen off the bus.",
            79,
            "00000000:3B:00.0",
            "GPU has fallen off the bus.",
            pid=1234,
            process="python3",
        ),
        id="no-commas-at-all",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00): 13, pid=77, name=Web Content, Graphics Exception, ESR 0x1",
            13,
            "00000000:3B:00.0",
            "Graphics Exception, ESR 0x1",
            pid=77,
            process="Web Content",
        ),
        id="process-name-with-a-space",
    ),
    pytest.param(
        Shape(
            "NVRM: Xid (PCI:0000:3b:00): 31 Ch 00000001, engmask 00000101",
            31,
            "00000000:3B:00.0",
            "Ch 00000001, engmask 00000101",
        ),
        id="no-comma-no-pid",
    ),
]


@pytest.mark.parametrize("shape", XID_SHAPES)
def test_every_published_xid_line_shape_is_parsed_into_its_fields(shape: Shape) -> None:
    parsed = parse_xid(shape.line)

    assert parsed == ParsedXid(
        kind="xid",
        xid=shape.xid,
        pci_bus_id=shape.pci,
        message=shape.message,
        pid=shape.pid,
        process=shape.process,
        mig_gi=shape.mig_gi,
        mig_ci=shape.mig_ci,
    )


def test_xid45_is_reported_as_45_not_as_the_previous_xid_it_names() -> None:
    parsed = parse_xid(
        "NVRM: Xid (PCI:0000:3b:00): 45, pid=1, name=x, Ch 00000010, caused by previous Xid 79"
    )

    assert parsed is not None
    assert parsed.xid == 45
    assert parsed.message.endswith("caused by previous Xid 79")


def test_xid154_message_keeps_the_new_recovery_action_text() -> None:
    parsed = parse_xid(
        "NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) "
        "to 0x4 (Drain and Reset)"
    )

    assert parsed is not None
    assert "Drain and Reset" in parsed.message


def test_mig_instance_ids_are_parsed_from_gpu_i_and_gpu_ci() -> None:
    parsed = parse_xid("NVRM: Xid (PCI:0000:3b:00 GPU-I:12 GPU-CI:03): 43, pid=1, name=x, m")

    assert parsed is not None
    assert (parsed.mig_gi, parsed.mig_ci) == (12, 3)


def test_text_before_the_nvrm_message_does_not_hide_the_xid() -> None:
    # A line read from a capture can still carry text before the NVRM message.
    parsed = parse_xid("[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=x, Graphics")

    assert parsed is not None
    assert parsed.xid == 13


@pytest.mark.parametrize(
    ("line", "code", "pci", "message", "detail"),
    [
        pytest.param(
            "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Fatal, Link 30 LTSSM Fault Up",
            20034,
            "00000000:05:00.0",
            "Fatal, Link 30 LTSSM Fault Up",
            False,
            id="sxid-fatal-headline",
        ),
        pytest.param(
            "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Severity 5 Engine instance 30 "
            "Sub-engine instance 00",
            20034,
            "00000000:05:00.0",
            "Severity 5 Engine instance 30 Sub-engine instance 00",
            True,
            id="sxid-severity-follow-on",
        ),
        pytest.param(
            "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Data {0x50610002, 0x10100030, "
            "0x00000000, 0x10100030, 0x00000000, 0x00000000, 0x00000000, 0x00000000}",
            20034,
            "00000000:05:00.0",
            "Data {0x50610002, 0x10100030, 0x00000000, 0x10100030, 0x00000000, 0x00000000, "
            "0x00000000, 0x00000000}",
            True,
            id="sxid-data-follow-on",
        ),
        pytest.param(
            "nvidia-nvswitch11: SXid (PCI:0000:c3:00.1): 01234, Non-fatal, Link 02 error",
            1234,
            "00000000:C3:00.1",
            "Non-fatal, Link 02 error",
            False,
            id="sxid-zero-padded-code-and-function-number",
        ),
    ],
)
def test_nvswitch_sxid_lines_are_parsed_with_follow_ons_marked_detail(
    line: str, code: int, pci: str, message: str, detail: bool
) -> None:
    parsed = parse_xid(line)

    assert parsed == ParsedXid("sxid", code, pci, message, detail=detail)


@pytest.mark.parametrize(
    ("text", "pci"),
    [
        pytest.param(
            "NVRM: GPU 0000:91:00.0: GPU has fallen off the bus.",
            "00000000:91:00.0",
            id="single-line",
        ),
        pytest.param(
            "NVRM: The NVIDIA GPU 0000:18:00.0\n"
            "(PCI ID: 10de:2901) installed in this system has\n"
            "fallen off the bus and is not responding to commands.",
            "00000000:18:00.0",
            id="three-line-record",
        ),
        pytest.param(
            "NVRM: The NVIDIA GPU 0000:18:00.0\n"
            "NVRM: (PCI ID: 10de:2901) installed in this system has\n"
            "NVRM: fallen off the bus and is not responding to commands.",
            "00000000:18:00.0",
            id="three-line-record-each-line-prefixed",
        ),
    ],
)
def test_fallen_off_the_bus_messages_are_an_implied_xid_79(text: str, pci: str) -> None:
    parsed = parse_xid(text)

    assert parsed is not None
    assert (parsed.kind, parsed.xid, parsed.pci_bus_id) == ("xid", FALLEN_OFF_BUS_XID, pci)
    assert parsed.implied is True
    assert "fallen off the bus" in parsed.message
    assert "\n" not in parsed.message
    assert "NVRM:" not in parsed.message


def test_a_real_xid_79_line_is_not_marked_implied() -> None:
    parsed = parse_xid(VALID_LINE)

    assert parsed is not None
    assert parsed.xid == 79
    assert parsed.implied is False


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        pytest.param("0000:3b:00", "00000000:3B:00.0", id="kernel-form-lowercase"),
        pytest.param("0000:3B:00", "00000000:3B:00.0", id="kernel-form-uppercase"),
        pytest.param("0000:3b:00.0", "00000000:3B:00.0", id="with-function"),
        pytest.param("0000:c3:00.1", "00000000:C3:00.1", id="nonzero-function-kept"),
        pytest.param("00000000:3B:00.0", "00000000:3B:00.0", id="nvml-form-is-a-fixed-point"),
        pytest.param("00000000:3b:00", "00000000:3B:00.0", id="eight-digit-domain-lowercase"),
        pytest.param("0001:af:1f", "00000001:AF:1F.0", id="nonzero-domain"),
    ],
)
def test_pci_addresses_are_normalised_to_nvml_bus_id_form(addr: str, expected: str) -> None:
    assert normalize_pci(addr) == expected


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            "NVRM: GPU at PCI:0000:3b:00: GPU-9b2c3f4e-1a2b-4c5d-8e9f-0a1b2c3d4e5f", id="gpu-at"
        ),
        pytest.param(
            "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15  "
            "Tue Mar  5 22:23:56 UTC 2024",
            id="module-load",
        ),
        pytest.param("NVRM: Xid errors are reported by the driver", id="xid-in-prose"),
        pytest.param("NVRM: see Xid (documentation) for details", id="xid-parenthesis-in-prose"),
        pytest.param("NVRM: RmInitAdapter failed! (0x26:0xffff:1601)", id="rminitadapter-failed"),
        pytest.param("NVRM: Xid (PCI:zz00:3b:00): 79, pid=1, name=x, m", id="non-hex-domain"),
        pytest.param("NVRM: Xid (PCI:000:3b:00): 79, pid=1, name=x, m", id="short-domain"),
        pytest.param("NVRM: Xid (PCI:0000:3b): 79, pid=1, name=x, m", id="no-device"),
        pytest.param("NVRM: Xid (PCI:0000:3b:00:00): 79, pid=1, name=x, m", id="extra-field"),
        pytest.param("NVRM: Xid (PCI:0000:3b:00.9): 79, pid=1, name=x, m", id="bad-function"),
        pytest.param("NVRM: Xid (PCI:0000:3b:00): , pid=1, name=x, m", id="missing-code"),
        pytest.param("NVRM: Xid (PCI:0000:3b:00): -79, pid=1, name=x, m", id="negative-code"),
        pytest.param("nvidia-nvswitch0: SXid (PCI:0000:05): 20034, Fatal", id="sxid-short-address"),
        pytest.param("NVRM: GPU has fallen off the bus.", id="fallen-off-without-address"),
        pytest.param("pcieport 0000:00:01.0: AER: Uncorrected (Fatal) error received", id="aer"),
        pytest.param("", id="empty"),
    ],
)
def test_near_miss_lines_are_not_events(line: str) -> None:
    assert parse_xid(line) is None


def test_an_xid_code_with_thousands_of_digits_does_not_raise() -> None:
    # int() refuses strings over 4300 digits; the parser must not pass one through.
    parse_xid(f"NVRM: Xid (PCI:0000:3b:00): {'9' * 5000}, pid=1, name=x, m")


def test_an_xid_code_with_thousands_of_digits_is_not_an_event() -> None:
    assert parse_xid(f"NVRM: Xid (PCI:0000:3b:00): {'9' * 5000}, pid=1, name=x, m") is None


def test_an_xid_code_longer_than_six_digits_is_not_truncated_into_another_code() -> None:
    parsed = parse_xid("NVRM: Xid (PCI:0000:3b:00): 1234567, pid=1, name=x, m")

    assert parsed is None or parsed.xid == 1234567


# --- properties -------------------------------------------------------------------------

_field_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]),
    max_size=40,
)


@PROPERTY
@given(st.text())
def test_parse_xid_never_raises_on_arbitrary_text(text: str) -> None:
    result = parse_xid(text)

    assert result is None or isinstance(result, ParsedXid)


@PROPERTY
@given(st.binary(max_size=300))
def test_parse_xid_never_raises_on_arbitrary_bytes_decoded_with_replacement(data: bytes) -> None:
    for text in (data.decode("utf-8", "replace"), "NVRM: Xid (" + data.decode("utf-8", "replace")):
        result = parse_xid(text)
        assert result is None or isinstance(result, ParsedXid)


@PROPERTY
@given(st.text(max_size=200))
def test_garbage_after_a_valid_line_changes_neither_code_nor_address(garbage: str) -> None:
    parsed = parse_xid(VALID_LINE + garbage)

    assert parsed is not None
    assert (parsed.kind, parsed.xid, parsed.pci_bus_id) == ("xid", 79, "00000000:3B:00.0")


@PROPERTY
@given(pid=_field_text, name=_field_text, message=_field_text)
def test_random_pid_name_and_message_fields_never_break_code_or_address(
    pid: str, name: str, message: str
) -> None:
    parsed = parse_xid(f"NVRM: Xid (PCI:0000:3b:00): 13, pid={pid}, name={name}, {message}")

    assert parsed is not None
    assert (parsed.xid, parsed.pci_bus_id) == (13, "00000000:3B:00.0")
    assert parsed.pid is None or parsed.pid >= 0


@PROPERTY
@given(
    domain=st.integers(0, 0xFFFF),
    bus=st.integers(0, 0xFF),
    device=st.integers(0, 0xFF),
    code=st.integers(1, 999_999),
    pid=st.integers(0, 4_194_304),
    name=st.from_regex(r"[A-Za-z0-9_.:/-]{1,15}", fullmatch=True),
    message=st.from_regex(r"[ -~]{0,60}", fullmatch=True),
)
def test_a_formatted_current_driver_line_parses_back_to_its_values(
    domain: int, bus: int, device: int, code: int, pid: int, name: str, message: str
) -> None:
    line = f"NVRM: Xid (PCI:{domain:04x}:{bus:02x}:{device:02x}): {code}, pid={pid}, name={name}, "
    parsed = parse_xid(line + message)

    assert parsed == ParsedXid(
        kind="xid",
        xid=code,
        pci_bus_id=f"{domain:08X}:{bus:02X}:{device:02X}.0",
        message=message.strip(),
        pid=pid,
        process=name,
    )


@PROPERTY
@given(
    domain=st.integers(0, 0xFFFF),
    bus=st.integers(0, 0xFF),
    device=st.integers(0, 0x1F),
    function=st.integers(0, 7),
)
def test_normalize_pci_is_idempotent_and_case_insensitive(
    domain: int, bus: int, device: int, function: int
) -> None:
    lower = f"{domain:04x}:{bus:02x}:{device:02x}.{function}"
    once = normalize_pci(lower)

    assert once == f"{domain:08X}:{bus:02X}:{device:02X}.{function}"
    assert normalize_pci(once) == once
    assert normalize_pci(lower.upper()) == once
