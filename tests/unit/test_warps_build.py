"""decoder_warps's GPU kernels compile for an H100 (sm_90) here, without a GPU, and use no matrix units;
so does the whole GPU step graph that calls them (MAX's compile-only mode).

`mojo build --target-accelerator sm_90 --emit asm` compiles each kernel the harness launches to PTX, so a
change that breaks the GPU side of the op (a type the device cannot take, a host-only call) fails on every
machine, not first on a GPU box. The op's arithmetic is checked by the parity suite through its CPU
emulation (the `warps` decoder), which runs the same item functions. What the launches prefetch changes no
value, so its plan is checked on its own, run on the CPU.
"""
import re
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import mojo_build

pytestmark = pytest.mark.unit

STAGES = 11  # decoder_warps.mojo: QKV .. LOGITS, one kernel each


@pytest.fixture(scope="module")
def ptx(tmp_path_factory) -> dict[str, str]:
    """The harness's PTX kernels by file name (float32 and float16 weights: two of each stage)."""
    out = tmp_path_factory.mktemp("ptx")
    done = mojo_build("decoder_warps_harness.mojo", out / "host.s", "--target-accelerator", "sm_90", "--emit", "asm")
    assert done.returncode == 0, f"decoder_warps does not compile for sm_90:\n{done.stderr[-3000:]}"
    return {p.name: p.read_text() for p in out.glob("*.ptx")}


def test_every_stage_compiles_to_a_gpu_kernel(ptx):
    assert len(ptx) == 2 * STAGES and all(".entry" in text and "sm_90" in text for text in ptx.values())


def test_the_kernels_use_no_matrix_units_and_reduce_with_warp_shuffles(ptx):
    """float32 on CUDA cores: no mma/wmma instruction (those round float32 like TF32 on an H100), and the
    lanes' sums are shuffles (the emulation's loops stand for exactly these)."""
    text = "".join(ptx.values())
    assert "mma" not in text
    assert "shfl.sync" in text


def test_each_kernel_reads_and_writes_only_after_the_stage_before_it_and_only_then_starts_the_next(ptx):
    """The stages are programmatic dependent launches (decoder_warps.mojo, `_kernel`): a kernel's blocks may
    start while the stage before still runs, so before `griddepcontrol.wait` a kernel may only prefetch (it
    reads nothing an earlier stage writes), never load or store global memory; and it starts the next stage
    (`launch_dependents`) only after that wait, so no more than two stages are ever in flight."""
    for name, text in ptx.items():
        body = text[text.index(".entry"):]
        wait, launch = body.find("griddepcontrol.wait"), body.find("griddepcontrol.launch_dependents")
        assert 0 <= wait < launch, f"{name}: no wait before the next stage's launch"
        assert not re.search(r"\b(ld|st|atom|red)\.global", body[:wait]), f"{name}: global memory before the wait"


def test_one_stage_can_keep_lines_in_l2_at_evict_last_priority_before_its_wait(ptx):
    """MAXWHISPER_WARPS_PREFETCH=3's requests are `prefetch.global.L2::evict_last`, in one stage's kernel per
    weight type (QKV's, the blocks' first stage, which asks for their data: the weights, keys and values, three
    of them), beside its normal-priority prefetch for the other settings, and issued before its wait."""
    keeping = [text[text.index(".entry"):] for text in ptx.values() if "prefetch.global.L2::evict_last" in text]
    assert len(keeping) == 2, len(keeping)
    for body in keeping:
        assert body.count("prefetch.global.L2::evict_last") == 3 and re.search(r"prefetch\.global\.L2 \[", body)
        assert body.rindex("prefetch.global.L2::evict_last") < body.index("griddepcontrol.wait")


def test_each_blocks_data_and_the_logits_panels_are_prefetched_once_and_in_time(tmp_path):
    """MAXWHISPER_WARPS_PREFETCH's plan (`_warm_bits`, run here on the CPU for 1 to 32 blocks): under 1 to 3,
    every block's weights and cross keys and values are asked of L2 exactly once a step, by a launch no later
    than the block's first stage (2: one block ahead), and only first stages ask for them; the logits' own
    launch asks for its panels, and under 2 the last block's first MLP stage asks for them all, once. 0 asks
    for nothing; 3 asks as 1 does, the blocks' data (and nothing else) at evict-last priority. A plan that
    skipped a block would leave its stages reading cold memory, one that asked late would gain nothing, and
    neither changes a logit, so only this shows it."""
    done = mojo_build("warm_bits_harness.mojo", tmp_path / "plan")
    assert done.returncode == 0, f"the prefetch plan does not build:\n{done.stderr[-3000:]}"
    printed = subprocess.run([str(tmp_path / "plan")], capture_output=True, text=True, check=True, timeout=60).stdout
    constants, *launch_lines = printed.splitlines()
    QKV, FC1, LOGITS, OWN, NEXT, PANELS, KEEP = map(int, constants.split())  # decoder_warps.mojo's
    plans: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for prefetch, blocks, block, stage, bits in (map(int, line.split()) for line in launch_lines):
        plans.setdefault((prefetch, blocks), []).append((block, stage, bits))
    assert sorted(plans) == [(p, n) for p in (0, 1, 2, 3) for n in (1, 2, 4, 6, 32)]
    for (prefetch, blocks), launches in plans.items():
        asked, panels = [], []  # (block asked for, by the launch of block): from first stages; the panels' askers
        for block, stage, bits in launches:
            assert prefetch or not bits, (prefetch, blocks, block, stage)
            assert bool(bits & KEEP) == (prefetch == 3 and stage == QKV), (prefetch, blocks, block, stage)
            if stage == QKV:
                asked += [(block, block)] * bool(bits & OWN) + [(block + 1, block)] * bool(bits & NEXT)
            else:
                assert not bits & NEXT and bool(bits & OWN) == (stage == LOGITS and prefetch > 0)
            if bits & PANELS:
                panels.append((block, stage))
        if prefetch:
            assert sorted(b for b, _ in asked) == list(range(blocks)), (prefetch, blocks, asked)
            assert all(by == (b if prefetch != 2 or b == 0 else b - 1) for b, by in asked), (prefetch, asked)
        assert panels == ([(blocks - 1, FC1)] if prefetch == 2 else []), (prefetch, blocks, panels)


# MAX's compile-only mode: virtual devices of a chosen API and architecture stand in for the GPU. It is
# process-wide, so the compile runs in a subprocess. Measured here: 18 s cold, 1.1 s from MAX's cache.
GPU_STEP_GRAPH = textwrap.dedent("""
    import max.driver as driver
    driver.set_virtual_device_api("cuda")
    driver.set_virtual_device_target_arch("sm_90")
    driver.set_virtual_device_count(1)
    from max.engine import InferenceSession
    from maxwhisper import weights
    from maxwhisper.decoder import DecoderConfig, _registry, build_step_graph
    loaded = weights.load("bundled")
    cfg = DecoderConfig(loaded.dims, "gpu", fused=True, storage="float16")
    assert cfg.warps
    InferenceSession(devices=[driver.Accelerator()]).load(build_step_graph(cfg),
                                                          weights_registry=_registry(cfg, loaded.decoder_weights()))
    print("compiled for", driver.get_virtual_device_target_arch(), flush=True)
    import os
    os._exit(0)  # past the compile, skip the runtime's teardown: once in CI it aborted there ("terminate called
    # without an active exception", exit -6) after the graph had compiled, and passed in 11 runs after
""")


def test_the_gpu_step_graph_with_the_warp_kernels_compiles_for_an_h100():
    """The step graph get_decoder(..., "gpu", fused=True) builds, the custom op's host side included, for sm_90."""
    done = subprocess.run([sys.executable, "-c", GPU_STEP_GRAPH], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "compiled for sm_90" in done.stdout, done.stderr[-3000:]
