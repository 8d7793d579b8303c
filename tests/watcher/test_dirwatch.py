"""Watching a directory: told once the watch is in place, every change after it is seen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from watcher.dirwatch import watch_directory


async def test_a_change_made_once_watching_is_the_first_batch(tmp_path: Path) -> None:
    stop, watching = asyncio.Event(), asyncio.Event()
    changes = watch_directory(tmp_path, stop=stop, on_watching=watching.set, debounce=10)

    async def first_batch() -> set[tuple[object, str]]:
        async for batch in changes:
            return batch
        raise AssertionError("the watch ended without a change")

    task = asyncio.create_task(first_batch())
    async with asyncio.timeout(10):
        await watching.wait()
        (tmp_path / "new.yaml").write_text("x")
        batch = await task
    assert {path for _, path in batch} == {str(tmp_path / "new.yaml")}
    await changes.aclose()


async def test_stopping_before_any_change_ends_the_watch(tmp_path: Path) -> None:
    stop, watching = asyncio.Event(), asyncio.Event()

    async def drain() -> int:
        return len(
            [b async for b in watch_directory(tmp_path, stop=stop, on_watching=watching.set)]
        )

    task = asyncio.create_task(drain())
    async with asyncio.timeout(10):
        await watching.wait()
        stop.set()
        assert await task == 0


async def test_a_watch_that_cannot_be_made_raises_and_never_says_it_watches(
    tmp_path: Path,
) -> None:
    watching = asyncio.Event()
    changes = watch_directory(tmp_path / "absent", stop=asyncio.Event(), on_watching=watching.set)
    with pytest.raises(FileNotFoundError):
        await anext(changes)  # the callback queued behind the failed step has run by now
    assert not watching.is_set()
