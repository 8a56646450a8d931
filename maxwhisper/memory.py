"""Peak memory while something runs: host RSS (psutil) and GPU memory (NVML), sampled in a thread.

torch's max_memory_allocated sees only torch's allocator, not MAX's, so device memory is read from
NVML (what the driver has handed out to everyone on that GPU) against the idle baseline before the run.
The GPU read is the one this process uses: the first entry of CUDA_VISIBLE_DEVICES (an index or a
UUID), which NVML, ignoring that variable, would otherwise number differently.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil


def visible_gpu() -> str | None:
    """The first GPU this process sees, as CUDA_VISIBLE_DEVICES names it: '0' when unset, None when empty."""
    first = os.getenv("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return first or None


def nvml_handle(nvml=None):
    """NVML handle of the GPU this process uses, or None (no NVML, no driver, no GPU, or none visible)."""
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
        gpu = visible_gpu()
        if gpu is None:
            return None
        if gpu.isdigit():
            index = int(gpu)
            return nvml.nvmlDeviceGetHandleByIndex(index) if index < nvml.nvmlDeviceGetCount() else None
        return nvml.nvmlDeviceGetHandleByUUID(gpu)  # "GPU-..." or "MIG-..." as CUDA lists them
    except Exception:  # no NVML library, no driver, no such GPU: device memory is simply not reported
        return None


def _used_mb(nvml, handle) -> float:
    return nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20


@dataclass
class PeakMemory:
    """Context manager: `with PeakMemory() as m: work()`, then m.peak_rss_mb, m.peak_device_mb."""
    interval_s: float = 0.002
    rss_baseline_mb: float = 0.0
    peak_rss_mb: float = 0.0
    device_baseline_mb: float | None = None
    peak_device_mb: float | None = None  # above the idle baseline, on the GPU this process uses
    samples: int = 0  # taken while the work ran (the thread's own)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self, nvml, handle) -> None:
        proc = psutil.Process()
        while True:
            self.peak_rss_mb = max(self.peak_rss_mb, proc.memory_info().rss / 2**20)
            if handle is not None:
                self.peak_device_mb = max(self.peak_device_mb or 0.0, _used_mb(nvml, handle) - self.device_baseline_mb)
            self.samples += 1
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakMemory":
        self.rss_baseline_mb = self.peak_rss_mb = psutil.Process().memory_info().rss / 2**20
        handle = nvml_handle()
        nvml = None
        if handle is not None:
            import pynvml as nvml
            self.device_baseline_mb = _used_mb(nvml, handle)
        self._thread = threading.Thread(target=self._sample, args=(nvml, handle), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(self.interval_s)  # one more sample after the work
        self._stop.set()
        self._thread.join()

    @property
    def added_rss_mb(self) -> float:
        return self.peak_rss_mb - self.rss_baseline_mb

    def as_extra_info(self) -> dict[str, float]:
        info = {"peak_rss_mb": round(self.peak_rss_mb, 1), "rss_baseline_mb": round(self.rss_baseline_mb, 1),
                "added_rss_mb": round(self.added_rss_mb, 1)}
        if self.peak_device_mb is not None:
            info["peak_device_mb"] = round(self.peak_device_mb, 1)
        return info
