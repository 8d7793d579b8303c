"""Stopping on a signal: one helper for run, gateway and demo, honouring a SIGTERM held at start."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

import xidwatch.signals
from xidwatch.signals import stop_on_signal


@pytest.fixture(autouse=True)
def _handlers_restored() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


async def test_a_signal_sets_the_stop_event_and_the_handlers_go_on_the_way_out() -> None:
    loop = asyncio.get_running_loop()
    with stop_on_signal() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        async with asyncio.timeout(10):
            await stop.wait()
    assert not loop.remove_signal_handler(signal.SIGINT)  # none left to remove
    assert not loop.remove_signal_handler(signal.SIGTERM)


async def test_a_sigterm_held_while_starting_stops_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xidwatch.signals, "_caught", [signal.SIGTERM])
    with stop_on_signal() as stop:
        assert stop.is_set()
