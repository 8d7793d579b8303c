"""Watching one directory (never its subdirectories) with watchfiles, saying when it watches.

The log-file follower and the config reloader both watch a file's directory, so a file
renamed over or rotated away and back is seen. Each is told once its watch is in place
and says so (a ``started`` event): a test can then change the file knowing the change will
be seen, instead of sleeping and hoping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from watchfiles import awatch
from watchfiles.main import FileChange

__all__ = ["watch_directory"]


async def watch_directory(
    directory: Path, *, stop: asyncio.Event, on_watching: Callable[[], None], **options: Any
) -> AsyncIterator[set[FileChange]]:
    """``awatch(directory, recursive=False, ...)`` that calls ``on_watching`` once it watches.

    awatch makes its inotify watch in its first step, before it first waits in a thread,
    and keeps every change from then on for its first batch. A callback queued right after
    that step runs once the watch exists, unless the step failed (the error is raised here).
    """
    changes = awatch(directory, recursive=False, stop_event=stop, **options)
    first = asyncio.ensure_future(anext(changes))
    asyncio.get_running_loop().call_soon(_call_unless_done, on_watching, first)
    try:
        try:
            batch = await first
        except StopAsyncIteration:  # stopped before anything changed
            return
        yield batch
        async for batch in changes:
            yield batch
    finally:
        await changes.aclose()


def _call_unless_done(on_watching: Callable[[], None], first: asyncio.Future[Any]) -> None:
    if not first.done():  # done already: the watch could not be made
        on_watching()
