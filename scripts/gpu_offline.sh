#!/usr/bin/env bash
# The GPU suite on a GPU box with no network, from a carried environment:
#   PARTS    folder holding part00, part01, ... of a zstd tar of a Python 3.12 site-packages folder (max,
#            openai-whisper, the bundled model, ...), made on a networked machine (README, "GPU box offline")
#   OUT      where the logs, the JUnit XML and the benchmark JSON go
# The box's own python3 must hold a CUDA torch, pytest, pytest-benchmark, hypothesis and nvidia-ml-py.
# Steps: unpack, compile every GPU graph in parallel (scripts/gpu_warm.py), run every gpu test, then the
# GPU benchmarks in full. Each step's log is kept; a failing step does not stop the next. Measured on an
# H100 box (16 cores, 2026-11-26): unpacking 20 s; the encoders' graphs compiled in 91-235 s side by side;
# the exact-product decoder took over 250 s (not finished then), hence WARM_S.
set -u
PARTS=${PARTS:-/tmp/parts}
OUT=${OUT:-/tmp/gpu-out}
SITE=/tmp/site312
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [ ! -d "$SITE" ]; then
  (cd "$PARTS" && sha256sum -c parts.sha256) || exit 3
  if command -v zstd >/dev/null; then
    cat "$PARTS"/part* | zstd -d -q | tar xf - -C /tmp || exit 3
  else  # the zstandard wheel beside the parts
    python3 -m pip install -q --no-index --no-deps --target /tmp/zstd-py "$PARTS"/zstandard-*.whl || exit 3
    cat "$PARTS"/part* | PYTHONPATH=/tmp/zstd-py python3 -c "
import sys, tarfile, zstandard
with zstandard.ZstdDecompressor().stream_reader(sys.stdin.buffer) as r, tarfile.open(fileobj=r, mode='r|') as t:
    t.extractall('/tmp')" || exit 3
  fi
fi
export PYTHONPATH="$SITE:$PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import max, torch, whisper; from max.driver import accelerator_count; \
print('max', max.__version__ if hasattr(max, '__version__') else '26.7', 'torch', torch.__version__, \
'cuda', torch.cuda.is_available(), 'MAX accelerators', accelerator_count())" | tee -a "$OUT/gpu.txt"
start=$(date +%s)
timeout ${WARM_S:-450} python3 scripts/gpu_warm.py 2>&1 | tee "$OUT/warm.log"
echo "warm: $(( $(date +%s) - start )) s" | tee -a "$OUT/warm.log"
start=$(date +%s)
timeout ${TESTS_S:-240} python3 -m pytest -m "gpu and not bench" -p no:cacheprovider -q -rfEs \
  --junitxml="$OUT/gpu-tests.xml" 2>&1 | tee "$OUT/tests.log" | tail -40
echo "tests: $(( $(date +%s) - start )) s"
start=$(date +%s)
MAXWHISPER_BENCH=full timeout ${BENCH_S:-240} python3 -m pytest tests/bench -m gpu -p no:cacheprovider -q \
  --benchmark-json="$OUT/bench-gpu.json" --benchmark-storage=file:///tmp/benchmarks \
  --benchmark-columns=min,median,rounds 2>&1 | tee "$OUT/bench.log" | grep -E "passed|failed|error|^FAILED|^ERROR" | tail -15
echo "bench: $(( $(date +%s) - start )) s"
