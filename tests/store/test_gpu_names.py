"""Naming a GPU: one resolver for index, UUID or prefix, and PCI id, XID-only GPUs included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from store.errors import InvalidQueryError
from store.inventory import resolve_gpus, select_gpus, stored_node_name
from store.records import GpuInfo, GpuStateEvent, SampleBatch
from tests.store.helpers import event, reading, write_all

T0 = 1_800_000_000_000
A, B, C = "00000000:3B:00.0", "00000000:86:00.0", "00000000:AF:00.0"
KERNEL_ONLY = "00000000:D8:00.0"  # in XID lines; NVML never listed a GPU there
GPU_A = GpuInfo("GPU-aaaa0000-h100", 0, "NVIDIA H100", A)
GPU_B = GpuInfo("GPU-bbbb0000-h100", 1, "NVIDIA H100", B)
GPU_C = GpuInfo("GPU-aaaa1111-h100", 2, "NVIDIA H100", C)


@pytest.fixture
async def named(db_path: Path) -> Path:
    xids = [event(n, gpu=pci, ts_ms=T0 + n * 1000) for n, pci in enumerate((A, B, KERNEL_ONLY))]
    await write_all(db_path, [SampleBatch(T0, gpus=(GPU_A, GPU_B, GPU_C)), *xids])
    return db_path


@pytest.mark.parametrize(
    "selector",
    [
        "1",
        1,
        " 1 ",
        "GPU-bbbb0000-h100",
        "GPU-bbbb",
        "gpu-BBBB0000",
        "00000000:86:00.0",
        "0000:86:00.0",
        "0000:86:00",
        "86:00.0",
        "86:00",
        "0:86:00.0",
    ],
)
async def test_every_spelling_names_the_same_gpu(named: Path, selector: str | int) -> None:
    async with reading(named) as conn:
        chosen = await select_gpus(conn, [selector])
        pairs = await resolve_gpus(conn, [selector])
    assert chosen.uuids == (GPU_B.uuid,) and chosen.pci_bus_ids == (B,)
    assert [g.info.uuid for _, g in pairs] == [GPU_B.uuid]


@pytest.mark.parametrize("selector", ["00000000:D8:00.0", "0000:d8:00.0", "d8:00", "D8:00.0"])
async def test_a_gpu_seen_only_in_xid_lines_resolves_by_its_pci_id_in_any_spelling(
    named: Path, selector: str
) -> None:
    async with reading(named) as conn:
        chosen = await select_gpus(conn, [selector, "0"])
    assert chosen.pci_bus_ids == (A, KERNEL_ONLY)
    assert chosen.xid_only == (KERNEL_ONLY,) and chosen.uuids == (GPU_A.uuid,)


async def test_readers_of_samples_are_told_an_xid_only_gpu_has_none(named: Path) -> None:
    async with reading(named) as conn:
        with pytest.raises(InvalidQueryError, match=r"00000000:D8:00\.0 is known only from kernel"):
            await resolve_gpus(conn, ["d8:00"])


async def test_no_selector_selects_every_gpu_and_every_xid_only_one(named: Path) -> None:
    async with reading(named) as conn:
        chosen = await select_gpus(conn, [])
        pairs = await resolve_gpus(conn, [])
    assert chosen.uuids == (GPU_A.uuid, GPU_B.uuid, GPU_C.uuid)
    assert chosen.xid_only == (KERNEL_ONLY,)
    assert [g.info.index for _, g in pairs] == [0, 1, 2]


@pytest.mark.parametrize("selector", ["\u0661", "\u00b9", "\uff11", "1\u0661"])
async def test_only_ascii_digits_are_gpu_indexes(named: Path, selector: str) -> None:
    # "\u0661" (Arabic-Indic one) passed str.isdigit() and selected GPU 1; "\u00b9" crashed int().
    async with reading(named) as conn:
        with pytest.raises(InvalidQueryError, match="matches no GPU"):
            await select_gpus(conn, [selector])


async def test_a_selector_that_matches_nothing_names_itself_why_and_every_known_gpu(
    named: Path,
) -> None:
    async with reading(named) as conn:
        with pytest.raises(InvalidQueryError) as no_gpu:
            await select_gpus(conn, ["0", "e7:00"])
        with pytest.raises(InvalidQueryError) as several:
            await resolve_gpus(conn, ["GPU-aaaa"])
    text = str(no_gpu.value)
    assert text.startswith("GPU 'e7:00' matches no GPU; name a GPU by index")
    assert text.endswith(
        "Known GPUs: 0 (00000000:3B:00.0), 1 (00000000:86:00.0), 2 (00000000:AF:00.0), "
        "00000000:D8:00.0 (seen only in XID lines)"
    )
    assert str(several.value).startswith("GPU 'GPU-aaaa' matches several GPUs; name a GPU")


async def test_a_lost_gpu_is_marked_in_the_known_gpus(db_path: Path) -> None:
    await write_all(
        db_path, [SampleBatch(T0, gpus=(GPU_A,)), GpuStateEvent(GPU_A.uuid, T0 + 1, "lost")]
    )
    async with reading(db_path) as conn:
        with pytest.raises(InvalidQueryError, match=r"Known GPUs: 0 \(00000000:3B:00\.0, lost\)$"):
            await select_gpus(conn, ["5"])


async def test_an_empty_store_says_there_is_nothing_to_name_yet(db_path: Path) -> None:
    await write_all(db_path, [])
    async with reading(db_path) as conn:
        with pytest.raises(InvalidQueryError, match=r"Known GPUs: none \(nothing sampled"):
            await select_gpus(conn, ["0"])


async def test_the_stored_node_name_is_the_one_the_newest_events_carry(db_path: Path) -> None:
    unnamed = replace(event(3, ts_ms=T0 + 3000), node="")
    await write_all(db_path, [replace(event(1), node="old-name"), event(2), unnamed])
    async with reading(db_path) as conn:
        assert await stored_node_name(conn) == "n1"


async def test_a_store_without_events_has_no_node_name(db_path: Path) -> None:
    await write_all(db_path, [SampleBatch(T0, gpus=(GPU_A,))])
    async with reading(db_path) as conn:
        assert await stored_node_name(conn) is None


async def test_gpus_that_replaced_one_another_in_a_slot_are_selected_together(
    db_path: Path,
) -> None:
    replacement = GpuInfo("GPU-cccc0000-h100", 0, "NVIDIA H100", A)
    await write_all(
        db_path,
        [SampleBatch(T0, gpus=(GPU_A, GPU_B)), SampleBatch(T0 + 60_000, gpus=(replacement,))],
    )
    async with reading(db_path) as conn:
        by_pci = await select_gpus(conn, ["3b:00"])
        by_index = await select_gpus(conn, ["0"])
        with pytest.raises(InvalidQueryError, match="'3b:00' matches several GPUs"):
            await resolve_gpus(conn, ["3b:00"])  # its readers need exactly one GPU
    assert by_pci == by_index
    assert by_pci.pci_bus_ids == (A,)
    assert set(by_pci.uuids) == {GPU_A.uuid, replacement.uuid}
