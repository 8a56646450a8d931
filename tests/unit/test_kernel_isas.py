"""The CPU kernels' attention built for AVX2 and for AVX-512, whatever CPU this is, against numpy in float64.

MAX compiles the kernels for the machine it runs on, and their tiles depend on the vector width: decoder_block's
cross-attention streams a step's rows on AVX2 and tiles them on AVX-512 (whole value rows; a prompt's tiles sum
8 key rows a pass on both), encoder_attention tiles 4 or 8 rows. So the rest of the suite checks only this CPU's
half; the CI machine's CPU varies between sessions (AVX2, or AVX-512). Here `mojo build --target-cpu` compiles a harness
(cpu_attention_harness.mojo) for both; every x86-64 CI machine runs the AVX2 build, and the AVX-512 build runs
where the CPU has AVX-512 (elsewhere it must still compile). The inputs come from their indices, as the harness
makes them: a multiple of 2^-15 in [-1, 1).
"""
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.bench.conftest import cpu_flags
from tests.helpers import ATTENTION_HEADS, ATTENTION_WIDTH, attention_excess, heads_f64, mojo_command

pytestmark = pytest.mark.unit
D, H, DH, FRAMES = ATTENTION_WIDTH, ATTENTION_HEADS, ATTENTION_WIDTH // ATTENTION_HEADS, 1500
# --target-cpu, the /proc/cpuinfo flag it needs to run, and the constants the build must print: the vector
# width, decoder_block's STREAM_ROWS, KEY_ROWS, TILE_ROWS and MIX_TILE_ROWS (so neither build is this CPU's)
ISAS = {"avx2": ("haswell", "avx2", [8, 5, 8, 4, 2]), "avx512": ("skylake-avx512", "avx512f", [16, 0, 8, 8, 8])}


def value(n: int, salt: int) -> np.ndarray:
    """The harness's `value` for indices 0 .. n - 1."""
    return ((np.arange(n, dtype=np.int64) * 40503 + salt * 9973) % 65536).astype(np.float32) / 32768 - 1


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict:
    """Each ISA's build (the completed `mojo build`, the binary), the two compiled at once (about 5 s each)."""
    out = tmp_path_factory.mktemp("isas")
    commands = {isa: mojo_command("cpu_attention_harness.mojo", out / isa, "--target-cpu", cpu)
                for isa, (cpu, _, _) in ISAS.items()}
    with ThreadPoolExecutor(len(ISAS)) as pool:
        done = {isa: pool.submit(subprocess.run, command, capture_output=True, text=True, timeout=300)
                for isa, command in commands.items()}
    return {isa: (future.result(), out / isa) for isa, future in done.items()}


@pytest.mark.parametrize("isa", ISAS)
def test_attention_kernels_compile_for_each_isa(builds, isa):
    done, _ = builds[isa]
    assert done.returncode == 0, f"the CPU kernels do not compile for {isa}:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("isa", ISAS)
def test_attention_kernels_built_for_each_isa_equal_numpy(builds, isa):
    done, binary = builds[isa]
    cpu, flag, constants = ISAS[isa]
    if flag not in cpu_flags():
        pytest.skip(f"this CPU has no {flag}: the {isa} build is only compiled here (the test above)")
    assert done.returncode == 0, done.stderr[-3000:]
    first, *lines = subprocess.run([str(binary)], capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()
    assert list(map(int, first.split())) == constants, f"the {cpu} build's constants are not {isa}'s"
    outputs = {(name, int(size)): np.array(values, np.float64) for name, size, *values in map(str.split, lines)}
    assert sorted(outputs) == [("cross", n) for n in range(1, 10)] + [("encoder", t) for t in (1, 9, 70)]
    # stored (H, DH, C)
    keys = value(H * DH * FRAMES, 1).reshape(1, H, DH, FRAMES).transpose(0, 1, 3, 2).astype(np.float64)
    values = value(H * FRAMES * DH, 2).reshape(1, H, FRAMES, DH).astype(np.float64)
    for (name, size), got in outputs.items():
        if name == "cross":  # size rows of one audio window, every head
            q = value(size * D, 3 + size).reshape(1, size, H, DH).transpose(0, 2, 1, 3).astype(np.float64)
            excess = attention_excess(got.reshape(1, size, D), q, keys, values)
        else:  # an encoder window of size frames
            excess = attention_excess(got.reshape(1, size, D), *heads_f64(value(size * 3 * D, 20 + size).reshape(1, size, 3 * D)))
        # the encoder test's float32 bound; measured worst 0.009 of it for the cross-attention (1500 keys of
        # values within 1) and 0.25 for the encoder windows, both builds (AMD EPYC Zen 4, 2026-11-28)
        assert (excess <= 1).all(), f"{isa} {name} {size}: max excess {excess.max():.3g}"
