"""How much GPU memory MAX holds once a decoder step is captured, under each candidate memory setting.

Each candidate runs in its own process (the runtime reads its settings once): the warp kernels' decoder
from MAX's cache, one captured single-token step, and NVML's used memory before the decoder, after it
loads, and after the capture. On an H200 (2026-11-27) a capture took the used memory up by 123 GB, so the
question is which setting bounds it.
Usage: python scripts/gpu_capture_memory.py   (prints one line per candidate)
"""
import os
import subprocess
import sys

CANDIDATES = [{}, {"MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT": "5"},
              {"MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE": str(4 << 30)},
              {"MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_CHUNK_PERCENT": "1"}]
PROBE = """
import numpy as np, pynvml
from maxwhisper import weights
from maxwhisper.decoder import get_decoder
from maxwhisper.memory import nvml_handle
handle = nvml_handle()
used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**30
base = used()
decoder = get_decoder(weights.load("bundled"), "gpu", fused=True, progress=lambda _: None)
state = decoder.new_state(np.zeros((1, 1500, 384), np.float32))
state.capture = True
state.step(np.zeros((1, 3), np.int64))
loaded = used()
for _ in range(3):
    state.step(np.full((1, 1), 440, np.int64))
print(f"GiB used: before {base:.2f}, decoder loaded {loaded - base:+.2f}, captured {used() - base:+.2f};",
      "captured" if state._graph is not None else f"not captured ({decoder.capture_error})")
"""

if __name__ == "__main__":
    for extra in CANDIDATES:
        done = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **extra}, capture_output=True, text=True,
                              timeout=300)
        print(extra or "default", "->", (done.stdout.strip() or done.stderr.strip()[-400:]), flush=True)
