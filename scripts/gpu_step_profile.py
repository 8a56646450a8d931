"""Where a GPU decoder step's time goes: run it under Nsight Compute, which then times each kernel of one step.

    ncu --profile-from-start off --metrics gpu__time_duration.sum --print-summary per-kernel \
        python3 scripts/gpu_step_profile.py [gpu|cpu] [graph|warps]
    python3 scripts/gpu_step_profile.py gpu warps captured   # where a replayed step's wall time goes
    python3 scripts/gpu_step_profile.py gpu warps blocks     # a captured step at each launch setting
    python3 scripts/gpu_step_profile.py gpu warps states     # a captured step in 8 states alive at once
    python3 scripts/gpu_step_profile.py gpu warps keep       # L2 evict-last prefetch, then with L2 set aside

The step is tiny.en's single-token step at batch 1 on a cache of 100 tokens, the benchmark's case, run
eagerly: every kernel of the graph launches on its own, so the summary lists them all with their counts (a
count of 2 is one kernel launched twice per step) and device times. A captured replay runs the same kernels.
The H100 run of 2026-11-27 measured 2.66 ms eager and 1.88 ms replayed for a step whose reads take 0.05 ms,
and the exact-product step graph holds 1581 graph ops (363 without the exact products; 228 casts, 171
slices, 57 concats), so the question is how many kernels those become and which of them take the time.
`warps`: the step as decoder_warps's kernels (11 stages, 38 launches for tiny.en's 4 blocks; on the CPU,
their emulation). Without ncu (or on the CPU) it prints the step's wall time only. `captured`: no profile;
the median wall time of a replayed step and of its parts (the input copies, the replay and the logits'
copy back), of an idle synchronize and the replay's launch alone, for the host's share of a step, and of the
step and the logits' copy waited for by polling an event instead of a synchronize (MAXWHISPER_STEP_WAIT=spin). `blocks`: the warp kernels' captured step at each launch
setting (threads a block, L2 prefetch off, on, a block ahead or at evict-last priority, dependent launches: MAXWHISPER_WARPS_BLOCK,
_PREFETCH, _PDL), interleaved. `states`: the default setting's captured step in 8 states alive at once, interleaved:
whether a state's own buffers set its level. `keep`: prefetch 3 against 1, then both again with L2 set aside
for evict-last lines.
"""
import sys

import numpy as np

from maxwhisper.paired import timed


PROMPT = np.random.default_rng(1).integers(0, 50000, (1, 100))  # the cache every probe steps from (100 tokens)
TOKEN = np.full((1, 1), 440, np.int64)  # the token each timed step decodes


def primed(decoder, features, capture: bool, reuse_cross: bool = False):
    """A state of `decoder` holding PROMPT in its cache, its single-token steps captured if `capture`, and a
    repeatable step of TOKEN from there (`rewound`)."""
    state = decoder.new_state(features, reuse_cross=reuse_cross)
    state.capture = capture
    state.step(PROMPT)
    return state, rewound(state, TOKEN)


def rewound(state, token):
    """A single-token step of `token` from the state's current cache, repeatable: the cache counts are set
    back before each (a step writes only its own rows)."""
    saved = (state.length, state.filled)

    def step():
        state.length, state.filled = saved
        state.step(token)
    return step


def breakdown(state, token) -> None:
    """Median wall times of a captured step and its parts, each over 50 repeats."""
    saved = (state.length, state.filled)
    step = rewound(state, token)
    step()  # captures
    graph = state._captured
    assert graph is not None, state.decoder.capture_error

    def copies():  # the three inputs a step changes, as a replayed step copies them
        graph.load(token, *saved)
        state.decoder.device.synchronize()

    def replay():
        graph.model.replay(graph.key, *graph.inputs)
        graph.fetch()

    def pageable():  # the logits' copy back as the fifth H200 run made it (0.040 ms), for comparison
        state.decoder._to_numpy(graph.outputs[0])
    # (the fifth H200 run's "input copies" also copied the logits back: 0.052 ms, against 0.040 for that alone)
    sync = state.decoder.device.synchronize

    def launch():  # the replay's host side, if the call returns once the launch is queued (if it waits for the
        # replay instead, this reads the replay); synced untimed, below
        graph.model.replay(graph.key, *graph.inputs)
    # the host's own share: a page-locked copy of 207 KB moves in about 4 us over PCIe 5, yet "logits alone" read
    # medians of 0.031 and 0.036 ms on two H200 boxes; an idle synchronize shows what waiting costs with nothing to
    # wait for. Each repeat ends with a synchronize, untimed (from 2026-11-27 20:00 UTC; the earlier parts' own
    # waits made it a no-op for them, so their figures compare with earlier runs')
    def spinning(fn):  # the same, waiting for the logits' copy by polling an event (MAXWHISPER_STEP_WAIT=spin)
        def run():
            kept, graph.spin = graph.spin, True
            try:
                fn()
            finally:
                graph.spin = kept
        return run
    for name, fn in (("step", step), ("input copies", copies), ("replay + logits", replay),
                     ("logits alone (page-locked)", graph.fetch), ("logits alone (pageable)", pageable),
                     ("synchronize, nothing queued", sync), ("replay launch, host side", launch),
                     ("step, waiting by an event polled", spinning(step)),
                     ("logits alone, waiting by an event polled", spinning(graph.fetch))):
        times = []
        for _ in range(50):
            times.append(timed(fn))
            sync()
        print(f"captured {name}: median {np.median(times[5:]) * 1e3:.3f} ms, min {min(times) * 1e3:.3f} ms", flush=True)


SETTINGS = [("64", "1", "1"), ("64", "1", "0"), ("64", "0", "1"), ("64", "2", "1"), ("64", "3", "1"), ("128", "1", "1")]


def blocks(decoder, features, settings=SETTINGS, label: str = "") -> None:
    """Median captured steps (batch 1, cache 100, 100 steps) of the warp kernels at each launch setting (threads
    a block, L2 prefetch off, on, a block ahead or at evict-last priority, dependent launches on or off:
    MAXWHISPER_WARPS_BLOCK,
    _PREFETCH, _PDL), in one
    process, interleaved over 3 rounds (a capture keeps the launch settings it was made with). Each median is
    printed as it is measured, with the GPU memory in use once its state is gone (18 captures in one process: a capture whose memory
    is not given back shows as a climb), and a setting that cannot capture is reported and skipped."""
    import gc
    import os

    from maxwhisper.memory import _used_mb, nvml_handle

    def gpu_memory() -> str:
        handle = nvml_handle()
        if handle is None:
            return "unknown (no NVML)"
        import pynvml
        return f"{_used_mb(pynvml, handle) / 1024:.1f} GiB"
    results = {}
    names = ("MAXWHISPER_WARPS_BLOCK", "MAXWHISPER_WARPS_PREFETCH", "MAXWHISPER_WARPS_PDL")
    for round_ in range(3):
        for setting in settings:
            os.environ.update(zip(names, setting))
            block, prefetch, pdl = setting
            state, step = primed(decoder, features, capture=True)
            times = [timed(step) for _ in range(105)]
            captured = state._captured is not None
            del state, step
            gc.collect()
            used = gpu_memory()
            if not captured:
                print(f"round {round_}, {block} threads, prefetch {prefetch}, pdl {pdl}: not captured ({decoder.capture_error or 'captures are GPU only'}); "
                      f"GPU memory in use {used}", flush=True)
                decoder.capture_refused.clear()  # the next setting tries again
                continue
            results.setdefault(setting, []).append(np.median(times[5:]) * 1e3)
            print(f"round {round_}, {block} threads, prefetch {prefetch}, pdl {pdl}: median {results[setting][-1]:.3f} ms; "
                  f"GPU memory in use {used}", flush=True)
    for name in names:
        os.environ.pop(name)
    for (block, prefetch, pdl), medians in results.items():
        print(f"warps captured step{label}, {block} threads a block, prefetch {prefetch}, pdl {pdl}: medians "
              f"{', '.join(f'{m:.3f}' for m in medians)} ms", flush=True)


def l2_set_aside(on: bool) -> str:
    """Set aside L2 for lines at evict-last priority (the driver's persisting-lines limit, 0 by default) as much
    as the device allows, or (off) give it back and demote the lines kept; through the CUDA driver API, on this
    thread's current context (MAX's, where it made one current) else the device's primary one. What was done, in
    words, with each call's status (0: success)."""
    import ctypes
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no CUDA driver"
    device, current, primary = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_void_p()
    most, limit = ctypes.c_int(), ctypes.c_size_t()
    if cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(device), 0):
        return "no CUDA device"
    calls = {"current": cuda.cuCtxGetCurrent(ctypes.byref(current)),
             "most": cuda.cuDeviceGetAttribute(ctypes.byref(most), 108, device),  # ..._MAX_PERSISTING_L2_CACHE_SIZE
             "primary": cuda.cuDevicePrimaryCtxRetain(ctypes.byref(primary), device)}
    pushed = not current.value
    if pushed:
        calls["push"] = cuda.cuCtxPushCurrent_v2(primary)
    calls["set"] = cuda.cuCtxSetLimit(6, ctypes.c_size_t(most.value if on else 0))  # CU_LIMIT_PERSISTING_L2_CACHE_SIZE
    if not on:
        calls["reset"] = cuda.cuCtxResetPersistingL2Cache()
    calls["get"] = cuda.cuCtxGetLimit(ctypes.byref(limit), 6)
    if pushed:
        calls["pop"] = cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
    calls["release"] = cuda.cuDevicePrimaryCtxRelease_v2(device)
    where = ("the primary context, pushed" if pushed else
             f"this thread's current context ({'the primary one' if current.value == primary.value else 'not the primary one'})")
    return (f"{limit.value / 2**20:.1f} MiB set aside of the device's most, {most.value / 2**20:.1f} MiB, on {where}; "
            f"statuses {calls}")


def keep(decoder, features) -> None:
    """MAXWHISPER_WARPS_PREFETCH=3 (the blocks' data kept in L2 at evict-last priority) against 1, interleaved
    over 3 rounds, then again with L2 set aside for such lines (`l2_set_aside`): the hint alone may not keep a
    line the driver gives no room."""
    pair = [("64", "1", "1"), ("64", "3", "1")]
    blocks(decoder, features, pair)
    print(f"L2 set aside for evict-last lines: {l2_set_aside(True)}", flush=True)
    try:
        blocks(decoder, features, pair, label=" (L2 set aside)")
    finally:
        print(f"L2 given back: {l2_set_aside(False)}", flush=True)


def states(decoder, features, count: int = 8, rounds: int = 3) -> None:
    """Captured steps (batch 1, cache 100, 100 steps) of `count` states alive at once, each with its own capture,
    caches and scratch, timed in turn over `rounds` rounds. In eight H200 benchmark processes the batch-1 captured
    case at cache 224 read minima of 0.291 to 0.345 ms (fixtures/bench_runs_h200_step8): a state slow in every
    round here is slow by where its buffers lie, one slow in one round by the moment. The second half of the states
    share the cross keys and values of the first half's last state (new_state's reuse_cross), to show the cross
    buffers' part. On the CPU the steps run eagerly (captures are GPU only)."""
    steps = []
    for i in range(count):  # state count // 2 - 1 keeps its cross for the later ones (MaxDecoder.cross)
        state, step = primed(decoder, features, capture=True, reuse_cross=i >= count // 2 - 1)
        if decoder.cfg.device == "gpu":
            assert state._captured is not None, decoder.capture_error
        steps.append(step)
    figures = [[] for _ in steps]
    for round_ in range(rounds):
        for i, step in enumerate(steps):
            times = [timed(step) for _ in range(105)]
            figures[i].append((np.median(times[5:]) * 1e3, min(times) * 1e3))
            print(f"round {round_}, state {i}: median {figures[i][-1][0]:.3f} ms, min {figures[i][-1][1]:.3f} ms",
                  flush=True)
    for i, rows in enumerate(figures):
        print(f"state {i} ({'cross of state ' + str(count // 2 - 1) if i >= count // 2 else 'own cross'}): medians "
              f"{', '.join(f'{m:.3f}' for m, _ in rows)} ms, minima {', '.join(f'{m:.3f}' for _, m in rows)} ms",
              flush=True)


def main(device: str = "gpu", kernel: str = "graph", mode: str = "eager") -> None:
    from maxwhisper import weights
    from maxwhisper.decoder import get_decoder
    loaded = weights.load("bundled")
    if kernel == "warps":
        decoder = get_decoder(loaded, device, warps=True, progress=lambda _: None)
    else:  # graph ops, as on GPU
        decoder = get_decoder(loaded, device, fused=False, exact_products=True, progress=lambda _: None)
    features = np.random.default_rng(0).standard_normal(
        (1, loaded.dims.n_audio_ctx, loaded.dims.n_audio_state)).astype(np.float32)
    if mode in ("blocks", "states", "keep"):
        return {"blocks": blocks, "states": states, "keep": keep}[mode](decoder, features)
    state, step = primed(decoder, features, capture=mode == "captured")
    if mode == "captured":
        return breakdown(state, TOKEN)
    saved = (state.length, state.filled)
    times = [timed(step) for _ in range(20)]  # warm: allocations, first launches
    profiler = None
    if device == "gpu":
        import torch
        if torch.cuda.is_available():
            profiler = torch.cuda.profiler
    state.length, state.filled = saved
    if profiler:
        profiler.start()
    state.step(TOKEN)  # the profiled step
    if profiler:
        profiler.stop()
    print(f"{device} {kernel} step, batch 1, cache 100, eager: median {np.median(times[5:]) * 1e3:.2f} ms of 15 "
          f"(ncu times the kernels of the one step after them)", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
