"""NVML's XID events: a second witness of the XIDs the kernel log reports.

``nvmlEventSetWait_v2`` blocks, so it runs in a thread of its own and hands each event to
the loop with ``call_soon_threadsafe``. The pipeline merges an NVML XID with the kernel
log's line for the same GPU and code, and stores it on its own only when the kernel log
did not show it (or is not being read). Some drivers report 999 (or 0) instead of the
code; those are kept as such, never guessed.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pynvml
import structlog

from watcher.clock import now_ms as wall_now_ms
from watcher.nvml.device import NvmlDevice

__all__ = ["UNKNOWN_NVML_CODES", "NvmlXid", "NvmlXidSource"]

log = structlog.get_logger("watcher.nvml.events")

UNKNOWN_NVML_CODES = frozenset({0, 999})


@dataclass(frozen=True, slots=True)
class NvmlXid:
    """An XID as NVML delivered it: which GPU, the code (maybe 999/0 = unknown), when."""

    pci_bus_id: str
    gpu_uuid: str
    code: int
    ts_ms: int

    @property
    def code_known(self) -> bool:
        return self.code not in UNKNOWN_NVML_CODES


def _address(handle: Any) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value


class NvmlXidSource:
    """Waits for XID critical-error events on every GPU that supports them.

    ``started`` is set once every GPU that can be is registered: an XID from then on is
    delivered (or at once, when no GPU supports the events and nothing will be).
    """

    name = "nvml-events"

    def __init__(
        self,
        devices: Sequence[NvmlDevice],
        sink: Callable[[NvmlXid], None],
        *,
        now_ms: Callable[[], int] = wall_now_ms,
        wait_ms: int = 500,
    ) -> None:
        self.events = 0
        self.errors = 0
        self._logged: set[str] = set()
        self._devices = list(devices)
        self._sink = sink
        self._now_ms = now_ms
        self._wait_ms = wait_ms
        self.started = asyncio.Event()
        self._stop = threading.Event()

    def stop(self) -> None:
        """End the wait; XIDs NVML has already queued are still handed on first."""
        self._stop.set()

    async def run(self) -> None:
        """Wait in a thread until :meth:`stop`; returns when that thread has finished."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def deliver(event: NvmlXid) -> None:
            self.events += 1
            self._sink(event)

        def body() -> None:
            try:
                self._wait_loop(
                    lambda event: loop.call_soon_threadsafe(deliver, event),
                    registered=lambda: loop.call_soon_threadsafe(self.started.set),
                )
            except BaseException as e:  # surfaced to the awaiting task
                loop.call_soon_threadsafe(_set_exception, done, e)
            else:
                loop.call_soon_threadsafe(_set_result, done)

        threading.Thread(target=body, name="nvml-events", daemon=True).start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self.stop()
            raise

    def _wait_loop(
        self, emit: Callable[[NvmlXid], object], *, registered: Callable[[], object]
    ) -> None:
        event_set = pynvml.nvmlEventSetCreate()
        try:
            by_address = self._register(event_set)
            registered()
            if not by_address:
                log.info("nvml_xid_events_unsupported", gpus=len(self._devices))
                return
            while not self._stop.is_set():
                self._hand_on(self._wait_one(event_set, self._wait_ms), by_address, emit)
            # Stopped: hand on what NVML had already queued, as the kernel log sources do.
            while (event := self._wait_one(event_set, 0)) is not None:
                self._hand_on(event, by_address, emit)
        finally:
            pynvml.nvmlEventSetFree(event_set)

    def _hand_on(
        self,
        event: Any,
        by_address: dict[int | None, NvmlDevice],
        emit: Callable[[NvmlXid], object],
    ) -> None:
        device = None if event is None else by_address.get(_address(event.device))
        if device is None or device.info is None:
            return
        info = device.info
        emit(NvmlXid(info.pci_bus_id, info.uuid, int(event.eventData), self._now_ms()))

    def _register(self, event_set: Any) -> dict[int | None, NvmlDevice]:
        registered: dict[int | None, NvmlDevice] = {}
        for device in self._devices:
            try:
                pynvml.nvmlDeviceRegisterEvents(
                    device.handle, pynvml.nvmlEventTypeXidCriticalError, event_set
                )
            except pynvml.NVMLError as e:
                log.warning("nvml_xid_events_not_registered", gpu=device.index, error=str(e))
                continue
            registered[_address(device.handle)] = device
        return registered

    def _wait_one(self, event_set: Any, wait_ms: int) -> Any:
        try:
            return pynvml.nvmlEventSetWait_v2(event_set, wait_ms)
        except pynvml.NVMLError_Timeout:
            return None
        except pynvml.NVMLError as e:
            # A lost GPU or an unloaded driver: say so once per kind of error, do not spin.
            if str(e) not in self._logged:
                self._logged.add(str(e))
                log.warning("nvml_event_wait_failed", error=str(e))
            self.errors += 1
            self._stop.wait(self._wait_ms / 1000)
            return None


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _set_exception(future: asyncio.Future[None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
