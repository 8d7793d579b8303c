"""The simulated node: its GPUs, the driver state they share, and the XID event queue.

:meth:`SimulatedFleet.build` lays out a node's boards on realistic PCI buses. The fleet
owns the clock the GPUs' physics follow, the lock that guards every GPU (XID event waiters
wait on it), the driver-wide switches the simulated library checks on each call, and the
fleet-wide sequence of XIDs that NVML event sets read from.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pynvml

from watcher.sim.gpu import SimulatedGpu
from watcher.sim.profiles import PROFILES

__all__ = ["SimulatedFleet", "XidRecord"]

_MAX_GPUS = 64
_BUSES_SMALL = (0x18, 0x3B, 0x86, 0xAF)  # a typical 4-GPU 2U server
_BUSES_HGX = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)  # an 8-GPU HGX baseboard


@dataclass(frozen=True, slots=True)
class XidRecord:
    """An XID the driver would deliver as an NVML event. ``seq`` orders them fleet-wide."""

    seq: int
    gpu_index: int
    event_data: int


class SimulatedFleet:
    """The GPUs of one simulated node, and the driver state they share.

    ``driver_loaded`` False makes every NVML call (nvmlInit too) answer DRIVER_NOT_LOADED;
    ``call_delay_s`` makes each device call sleep that long, to exercise sampler overruns.
    ``lock`` guards every GPU; XID event waiters wait on it.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        time_scale: float = 1.0,
        driver_version: str = "570.124.06",
        cuda_version: int = 12080,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.seed = seed
        self.clock = clock
        self.time_scale = time_scale
        self.started_at = clock()
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.driver_loaded = True
        self.call_delay_s = 0.0
        self.lock = threading.Condition(threading.RLock())
        self.gpus: list[SimulatedGpu] = []
        self._xids: deque[XidRecord] = deque(maxlen=10_000)
        self._next_seq = 1

    @classmethod
    def build(
        cls,
        count: int,
        profile: str | Sequence[str] = "H100-80GB",
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        time_scale: float = 1.0,
        driver_version: str = "570.124.06",
        cuda_version: int = 12080,
    ) -> SimulatedFleet:
        """``count`` GPUs of one model, or of the models listed (one name per GPU)."""
        if not 1 <= count <= _MAX_GPUS:
            raise ValueError(f"a simulated node has 1..{_MAX_GPUS} GPUs, got {count}")
        keys = [profile] * count if isinstance(profile, str) else list(profile)
        if len(keys) != count:
            raise ValueError(f"{len(keys)} profiles given for {count} GPUs")
        if unknown := sorted(set(keys) - PROFILES.keys()):
            raise ValueError(f"unknown GPU profile {unknown}; known: {sorted(PROFILES)}")
        fleet = cls(
            seed=seed,
            clock=clock,
            time_scale=time_scale,
            driver_version=driver_version,
            cuda_version=cuda_version,
        )
        for index, (key, bus) in enumerate(zip(keys, _pci_buses(count), strict=True)):
            bus_id = pynvml.NVML_DEVICE_PCI_BUS_ID_FMT % (0, bus, 0)
            fleet.gpus.append(SimulatedGpu(fleet, index, PROFILES[key], bus_id))
        return fleet

    @property
    def last_xid_seq(self) -> int:
        """The sequence number of the latest XID (0 before any): events after it are new."""
        with self.lock:
            return self._next_seq - 1

    def xids_after(self, seq: int) -> list[XidRecord]:
        """The XIDs raised after sequence number ``seq``, oldest first."""
        with self.lock:
            return [r for r in self._xids if r.seq > seq]

    def _publish_xid(self, gpu_index: int, event_data: int) -> None:
        with self.lock:
            self._xids.append(XidRecord(self._next_seq, gpu_index, event_data))
            self._next_seq += 1
            self.lock.notify_all()


def _pci_buses(count: int) -> tuple[int, ...]:
    if count <= len(_BUSES_SMALL):
        return _BUSES_SMALL[:count]
    if count <= len(_BUSES_HGX):
        return _BUSES_HGX[:count]
    step = 0xF8 // count
    return tuple(0x04 + i * step for i in range(count))
