"""Peak memory while something runs: host RSS (psutil) and GPU memory (NVML), sampled in a thread.

torch's max_memory_allocated sees only torch's allocator, not MAX's, so device memory is read from
NVML (what the driver has handed out to everyone on the GPU) against the idle baseline before the run.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


def _nvml_used_mb() -> list[float] | None:
    try:
        import pynvml
        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used / 2**20
                for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no NVML library, no driver, or no GPU: device memory is simply not reported
        return None


@dataclass
class PeakMemory:
    """Context manager: `with PeakMemory() as m: work()`, then m.peak_rss_mb, m.peak_device_mb."""
    interval_s: float = 0.002
    rss_baseline_mb: float = 0.0
    peak_rss_mb: float = 0.0
    device_baseline_mb: float | None = None
    peak_device_mb: float | None = None  # above the idle baseline, GPU 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        proc = psutil.Process()
        while True:
            self.peak_rss_mb = max(self.peak_rss_mb, proc.memory_info().rss / 2**20)
            used = _nvml_used_mb() if self.device_baseline_mb is not None else None
            if used:
                self.peak_device_mb = max(self.peak_device_mb or 0.0, used[0] - self.device_baseline_mb)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakMemory":
        self.rss_baseline_mb = self.peak_rss_mb = psutil.Process().memory_info().rss / 2**20
        used = _nvml_used_mb()
        self.device_baseline_mb = used[0] if used else None
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(self.interval_s)  # one more sample after the work
        self._stop.set()
        self._thread.join()

    def as_extra_info(self) -> dict[str, float]:
        info = {"peak_rss_mb": round(self.peak_rss_mb, 1), "rss_baseline_mb": round(self.rss_baseline_mb, 1)}
        if self.peak_device_mb is not None:
            info["peak_device_mb"] = round(self.peak_device_mb, 1)
        return info
