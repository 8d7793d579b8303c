"""The simulated driver library: what pynvml calls in place of ``libnvidia-ml.so``.

pynvml resolves each C function with ``getattr(pynvml.nvmlLib, name)`` and calls it with
ctypes arguments, checking the integer it returns. :class:`SimulatedNvml` puts a library
object there whose attributes are such functions, answering from a
:class:`~watcher.sim.fleet.SimulatedFleet`, so every pynvml wrapper (and everything built on
them) runs unchanged. A name the library does not export raises AttributeError, which
pynvml turns into FUNCTION_NOT_FOUND, as with an old driver.

This module holds the library object and its plumbing: the symbol registry
(:func:`_exports`), the per-call checks (driver loaded, initialized, handle valid, GPU lost,
function unsupported), handles and event sets. The symbols themselves are implemented in
:mod:`watcher.sim.functions`, which the package imports so that all are registered.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import pynvml

from watcher.sim.fleet import SimulatedFleet, XidRecord
from watcher.sim.gpu import SimulatedGpu

__all__ = ["SimulatedNvml"]

_F = TypeVar("_F", bound=Callable[..., Any])

_INVALID: int = pynvml.NVML_ERROR_INVALID_ARGUMENT
_NOT_SUPPORTED: int = pynvml.NVML_ERROR_NOT_SUPPORTED
_GPU_IS_LOST: int = pynvml.NVML_ERROR_GPU_IS_LOST
_tokens = itertools.count(1)


@dataclass(frozen=True, slots=True)
class _Spec:
    impl: Callable[..., Any]
    device: bool


_SPECS: dict[str, _Spec] = {}


def _exports(*names: str, device: bool = False) -> Callable[[_F], _F]:
    """Register ``fn`` as the implementation of NVML symbols ``names``.

    A device function takes the GPU (resolved from the handle, after the lost and
    unsupported checks) in place of the handle.
    """

    def register(fn: _F) -> _F:
        for name in names:
            _SPECS[name] = _Spec(fn, device)
        return fn

    return register


class _Fail(Exception):
    """Return ``code`` from the current call."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _EventSet:
    """An ``nvmlEventSet_t``: the GPUs registered, and how far the waiter has read."""

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.registered: dict[int, tuple[int, int]] = {}  # gpu index -> (mask, from seq)


class _NvmlFunction:
    """One exported symbol. An instance, not a bound method, so pynvml may set
    ``restype`` on it as on a ctypes function pointer.
    """

    def __init__(self, library: _SimulatedLibrary, name: str, spec: _Spec) -> None:
        self.__name__ = name
        self.restype: object = ctypes.c_int
        self.argtypes: object = None
        self._library = library
        self._spec = spec

    def __call__(self, *args: Any) -> Any:
        return self._library.call(self.__name__, self._spec, args)


class _SimulatedLibrary:
    """Stands where pynvml keeps its CDLL handle. Handles are fake addresses unique to
    this library, so a handle from an earlier install never reaches another fleet's GPU.
    """

    def __init__(self, fleet: SimulatedFleet, base_address: int) -> None:
        self.fleet = fleet
        self.base_address = base_address
        self.init_count = 0
        self.functions: dict[str, _NvmlFunction] = {}
        self.event_sets: dict[int, _EventSet] = {}
        self.next_event_set = 1

    def __getattr__(self, name: str) -> _NvmlFunction:
        spec = _SPECS.get(name)
        if spec is None or name.startswith("_"):
            raise AttributeError(f"simulated libnvidia-ml.so has no symbol {name!r}")
        if name not in self.functions:
            self.functions[name] = _NvmlFunction(self, name, spec)
        return self.functions[name]

    def call(self, name: str, spec: _Spec, args: tuple[Any, ...]) -> Any:
        fleet = self.fleet
        if name == "nvmlErrorString":
            return spec.impl(self, *args)
        if not fleet.driver_loaded:
            return pynvml.NVML_ERROR_DRIVER_NOT_LOADED
        if self.init_count == 0 and name != "nvmlInitWithFlags":
            return pynvml.NVML_ERROR_UNINITIALIZED
        try:
            if not spec.device:
                return spec.impl(self, *args)
            if fleet.call_delay_s > 0:
                time.sleep(fleet.call_delay_s)
            with fleet.lock:
                gpu = self.gpu(args[0])
                if gpu.lost:
                    return _GPU_IS_LOST
                if name in gpu.unsupported:
                    return _NOT_SUPPORTED
                return spec.impl(self, gpu, *args[1:])
        except _Fail as e:
            return e.code

    # -- handles -------------------------------------------------------------------------

    def handle_address(self, gpu: SimulatedGpu) -> int:
        return self.base_address + (gpu.index + 1) * 0x40

    def gpu(self, handle: Any) -> SimulatedGpu:
        index = (_address(handle) - self.base_address) // 0x40 - 1
        if 0 <= index < len(self.fleet.gpus):
            gpu = self.fleet.gpus[index]
            if self.handle_address(gpu) == _address(handle):
                return gpu
        raise _Fail(_INVALID)

    def event_set(self, handle: Any) -> _EventSet:
        es = self.event_sets.get(_address(handle))
        if es is None:
            raise _Fail(_INVALID)
        return es

    def next_xid(self, es: _EventSet) -> XidRecord | None:
        """The first XID after the set's cursor from a GPU registered for XID events."""
        for record in self.fleet.xids_after(es.cursor):
            es.cursor = record.seq
            mask, from_seq = es.registered.get(record.gpu_index, (0, 0))
            if mask & pynvml.nvmlEventTypeXidCriticalError and record.seq > from_seq:
                return record
        return None


class SimulatedNvml:
    """Installs a fleet as the NVML library pynvml calls; a context manager.

    ``install`` swaps ``pynvml.nvmlLib`` for the simulated library and clears pynvml's
    function-pointer cache; ``uninstall`` puts both back (and pynvml's init refcount).
    pynvml's state is process-wide, so only one may be installed at a time.
    """

    _installed: SimulatedNvml | None = None
    _install_lock = threading.Lock()

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self._saved: tuple[Any, dict[str, Any], int] | None = None

    def install(self) -> None:
        """Make pynvml talk to the simulated fleet; raises if one is installed already."""
        with SimulatedNvml._install_lock:
            if SimulatedNvml._installed is not None:
                raise RuntimeError("a SimulatedNvml is already installed; uninstall it first")
            library = _SimulatedLibrary(self.fleet, 0x5100_0000_0000 + (next(_tokens) << 24))
            with pynvml.libLoadLock:
                cache = pynvml._nvmlGetFunctionPointer_cache
                self._saved = (pynvml.nvmlLib, dict(cache), pynvml._nvmlLib_refcount)
                pynvml.nvmlLib = library
                cache.clear()
            SimulatedNvml._installed = self

    def uninstall(self) -> None:
        """Give pynvml back its previous library; a no-op when this one is not installed."""
        with SimulatedNvml._install_lock:
            if SimulatedNvml._installed is not self or self._saved is None:
                return
            lib, saved_cache, refcount = self._saved
            with pynvml.libLoadLock:
                pynvml.nvmlLib = lib
                cache = pynvml._nvmlGetFunctionPointer_cache
                cache.clear()
                cache.update(saved_cache)
                pynvml._nvmlLib_refcount = refcount
            self._saved = None
            SimulatedNvml._installed = None

    def __enter__(self) -> SimulatedNvml:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()


# -- handle addresses ------------------------------------------------------------------


def _address(handle: Any) -> int:
    """The integer address inside an opaque handle (``c_nvmlDevice_t``, event set)."""
    try:
        value = ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError) as e:
        raise _Fail(_INVALID) from e
    if not value:
        raise _Fail(_INVALID)
    return int(value)


def _set_address(ref: Any, address: int) -> None:
    """Fill a ``byref(handle)`` out-parameter with ``address``."""
    ctypes.c_void_p.from_buffer(ref._obj).value = address
