#!/usr/bin/env bash
# The GPU suite on a GPU box with no network, from a carried environment:
#   PARTS    folder holding part00, part01, ... of a zstd tar of a Python 3.12 site-packages folder (max,
#            openai-whisper, the bundled model, ...), made on a networked machine (docs/gpu.md, "GPU box offline")
#   OUT      where the logs (run.log, warm.log, step-profile.log) and the benchmark JSON go
#   TOTAL_S  seconds for everything after unpacking (default 540); each stage gets what is left
#   PROFILE  0 skips the per-kernel profiles (Nsight Compute) and the captured step's timeline (Nsight Systems);
#            NCU=0 skips the per-kernel profiles alone
#   CAPTURE_MEMORY  1 runs scripts/gpu_capture_memory.py (61 s on an H200 box)
#   GPU_JOBS the graphs to compile (scripts/gpu_warm.py's job names; default all); stages needing one left out
#            are skipped: without decoder-float32 (348 s to compile), the warp kernels' decoder runs alone
# The box's own python3 must hold a CUDA torch, pytest, pytest-benchmark, hypothesis and nvidia-ml-py.
# Stages, decoders first (a device lease is short): every GPU graph compiles in parallel in the background
# (scripts/gpu_warm.py); as soon as a decoder's is in MAX's cache (the warp kernels' first, then the graph
# ops'), its gpu tests, its step benchmark and, where Nsight Compute is installed, a per-kernel profile of one
# step (scripts/gpu_step_profile.py) run;
# then, once the rest are compiled, every other gpu test and the GPU benchmarks. Each stage's log is kept;
# a failing stage does not stop the next. Measured on an H100 box (16 cores, 2026-11-27): unpacking 20 s;
# the graphs compiled side by side in 103-249 s, the exact-product decoder's in 348 s; then the decoder's
# tests 21 s, its full step benchmark 32 s, the other gpu tests 68 s, the end-to-end benchmark 55 s, the
# encoder benchmark 39 s in quick mode (full mode outran the 540 s, so it runs quick here). On an H200 box
# (2026-11-27): the warp kernels' decoder compiled in 88-109 s, its tests 19-23 s, its full step benchmark
# 24-31 s, its profile 18 s, the captured-step split 14 s, the capture-memory probe 61 s, the warps
# end-to-end benchmark 40-52 s, the max path's warps token test 22-30 s; GPU_JOBS="decoder-warps
# encoder-float32" ran all of that in 305 s after unpacking.
set -u
PARTS=${PARTS:-/tmp/parts}
OUT=${OUT:-/tmp/gpu-out}
SITE=/tmp/site312
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [ ! -d "$SITE" ]; then
  (cd "$PARTS" && sha256sum -c --quiet parts.sha256) || exit 3
  if command -v zstd >/dev/null; then
    cat "$PARTS"/part[0-9]* | zstd -d -q | tar xf - -C /tmp || exit 3
  else  # the zstandard wheel beside the parts
    python3 -m pip install -q --no-index --no-deps --target /tmp/zstd-py "$PARTS"/zstandard-*.whl || exit 3
    cat "$PARTS"/part[0-9]* | PYTHONPATH=/tmp/zstd-py python3 -c "
import sys, tarfile, zstandard
with zstandard.ZstdDecompressor().stream_reader(sys.stdin.buffer) as r, tarfile.open(fileobj=r, mode='r|') as t:
    t.extractall('/tmp')" || exit 3
  fi
fi
export PYTHONPATH="$SITE:$PWD"
START=$(date +%s)
END=$(( START + ${TOTAL_S:-540} ))
left() { echo $(( END - $(date +%s) > 5 ? END - $(date +%s) : 5 )); }
stamp() { echo "== $1 at +$(( $(date +%s) - START )) s"; }
LOG="$OUT/run.log"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import max, torch, whisper; from max.driver import accelerator_count; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'MAX accelerators', accelerator_count())"
  lscpu | grep -m1 "Model name"; } 2>&1 | tee "$LOG"

# the encoders compile niced (gpu_warm.py): the step benchmark below times host-side launches while they run
# shellcheck disable=SC2086
timeout "$(left)" python3 scripts/gpu_warm.py ${GPU_JOBS:-} > "$OUT/warm.log" 2>&1 &
warm=$!
wanted() { [ -z "${GPU_JOBS:-}" ] || [[ " $GPU_JOBS " == *" $1 "* ]]; }  # wanted JOB: whether JOB compiles
compiled() {  # compiled JOB: wait until gpu_warm.py reports JOB (done or failed)
  for _ in $(seq "$(left)"); do grep -q "^$1" "$OUT/warm.log" && break; sleep 1; done
  stamp "$1 compiled" | tee -a "$LOG"
}

GPU_PYTEST=(python3 -m pytest -p no:cacheprovider -q -rfEs)
BENCH=(-m gpu --benchmark-storage=file:///tmp/benchmarks --benchmark-columns=min,median,rounds)
script() {  # script NAME COMMAND...: the command's output appended to run.log, its exit status shown
  local name=$1; shift
  echo "== $name" >> "$LOG"
  timeout "$(left)" "$@" >> "$LOG" 2>&1
  stamp "$name (exit $?)" | tee -a "$LOG"
}
stage() {  # stage NAME PYTEST-ARGS...: one pytest run, as a script
  local name=$1; shift
  script "$name" "${GPU_PYTEST[@]}" "$@"
}
profiling() { [ "${PROFILE:-1}" != 0 ] && command -v "$1" >/dev/null; }  # profiling TOOL: wanted and installed
profile() {  # profile KERNEL: each kernel of one eager step, timed (scripts/gpu_step_profile.py), where ncu is
  [ "${NCU:-1}" != 0 ] && profiling ncu || return 0
  # clocks and caches left alone: a replayed step finds the weights and cross keys/values it last read in L2
  timeout "$(left)" ncu --clock-control none --cache-control none --profile-from-start off \
    --metrics gpu__time_duration.sum --print-summary per-kernel \
    python3 scripts/gpu_step_profile.py gpu "$1" > "$OUT/step-profile-$1.log" 2>&1
  stamp "$1 step profile (exit $?)" | tee -a "$LOG"
}
timeline() {  # one replayed step's kernels and copies in time order with the idle time between them (Nsight
  # Systems, scripts/gpu_timeline.py), where nsys is: what the per-kernel profile cannot show
  profiling nsys || return 0
  local rep=/tmp/step-timeline
  { timeout "$(left)" nsys profile --trace=cuda --cuda-graph-trace=node --force-overwrite=true -o "$rep" \
      python3 scripts/gpu_step_profile.py gpu warps captured &&
    timeout "$(left)" nsys stats --report cuda_gpu_trace --format csv --force-export=true -o "$rep" "$rep.nsys-rep" &&
    python3 scripts/gpu_timeline.py "$(ls "$rep"*cuda_gpu_trace*.csv | head -1)"; } > "$OUT/step-timeline.log" 2>&1
  stamp "captured step timeline (exit $?)" | tee -a "$LOG"
}
# the warp kernels' decoder first: a small graph, the step the 0.3 ms target is for
compiled decoder-warps
stage "warps tests" -m "gpu and not bench" -k "warps and not max_path"  # the max path needs an encoder too
MAXWHISPER_BENCH=full stage "warps step benchmark" tests/bench/test_decoder_bench.py "${BENCH[@]}" \
  -k "torch or warps" --benchmark-json="$OUT/bench-decoder-warps.json"
profile warps
script "captured step breakdown" python3 scripts/gpu_step_profile.py gpu warps captured
timeline
# the batch-1 step cases again in a process of their own, no PyTorch case before them: in the eighth run the
# full benchmark's captured batch-1 steps read 0.004-0.079 ms slower than such a process's (docs/gpu.md)
MAXWHISPER_BENCH=full stage "warps batch-1 step cases alone" tests/bench/test_decoder_bench.py "${BENCH[@]}" \
  -k "warps and b1" --benchmark-json="$OUT/bench-decoder-warps-b1.json"
# 8 captured states alive at once, interleaved: whether a state's own buffers set its step's level (the benchmark's
# batch-1 captured cases moved 1.09-1.22x between processes, slow at their fastest rounds too)
script "captured states" python3 scripts/gpu_step_profile.py gpu warps states
# 18 captures in turn, each released before the next: the memory manager bounded as scripts/gpu_capture_memory.py
# measured it (4.6 GiB, steps still captured)
MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE=4294967296 script "launch settings" \
  python3 scripts/gpu_step_profile.py gpu warps blocks
# evict-last prefetch against the default, then with L2 set aside for such lines (a process of its own: the
# set-aside stays for the process)
MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE=4294967296 script "L2 kept" python3 scripts/gpu_step_profile.py gpu warps keep
# measured in the fifth run (docs/gpu.md); opt-in, since it takes a minute of a short lease
[ "${CAPTURE_MEMORY:-0}" != 0 ] && script "capture memory" python3 scripts/gpu_capture_memory.py
if wanted encoder-float32; then
  compiled encoder-float32
  MAXWHISPER_BENCH=full stage "end-to-end benchmark, warps" tests/bench/test_compile_and_transcribe_bench.py \
    "${BENCH[@]}" -k "warps or clip[gpu]" --benchmark-json="$OUT/bench-e2e-warps.json"
  stage "warps max path" -m "gpu and not bench" -k "max_path and warps"
fi
if wanted decoder-float32; then
  compiled decoder-float32
  stage "decoder tests" -m "gpu and not bench" -k "(decoder or captured or max_path) and not warps"
  MAXWHISPER_BENCH=full stage "decoder step benchmark" tests/bench/test_decoder_bench.py "${BENCH[@]}" \
    -k "not warps" --benchmark-json="$OUT/bench-decoder.json"
  profile graph
  MAXWHISPER_BENCH=full stage "end-to-end benchmark, graph ops" tests/bench/test_compile_and_transcribe_bench.py \
    "${BENCH[@]}" -k "max-gpu and not warps" --benchmark-json="$OUT/bench-e2e.json"
fi
wait $warm; stamp "every graph compiled" | tee -a "$LOG"; cat "$OUT/warm.log"
if wanted encoder-bfloat16; then  # the encoders' taps and benchmarks: every encoder graph
  stage "other gpu tests" -m "gpu and not bench" -k "not (decoder or captured or warps or max_path)"
  stage "encoder benchmark" tests/bench/test_encoder_bench.py "${BENCH[@]}" \
    --benchmark-json="$OUT/bench-encoder.json"
fi
grep -E "^== |passed|failed|^FAILED|^ERROR" "$LOG"
