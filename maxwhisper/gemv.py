"""Python side of the ``gemv_nt`` custom Mojo op (maxwhisper/kernels/gemv_nt.mojo).

``gemv_nt(x, w, n)`` computes ``x @ W.T`` (M, n) for float32 ``x`` (M, K) and W (n, K), row-major in
PyTorch's Linear layout (or the token embedding, for the logits), given packed by ``panels(W)``: float32
or float16 (widened as loaded, so the arithmetic is float32's). It streams W once at close to memory
bandwidth, which MAX's ``ops.matmul`` does not for small M. The decoder's kernel (``decoder_block``) calls
the same routine, ``gemv_range``, for its matrix products and its logits, over matrices packed the same
way (``maxwhisper.fused.pack_block``); this op is that routine on its own, which tests/unit/test_gemv.py
checks against numpy for any shape.

A graph that uses it must be built with ``custom_extensions=[KERNELS_PATH]``: the kernels precompiled
into one package in a folder named by their content (``~/.cache/maxwhisper/kernels-<hash>/``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from max.dtype import DType
from max.graph import TensorType, TensorValue, ops

SOURCES = Path(__file__).resolve().parent / "kernels"


def stable_kernels_path(sources: Path = SOURCES) -> Path:
    """The kernels copied to a folder named by their content, under the user's cache.

    MAX caches a compiled kernel package by its folder's path (and content): measured, the same sources at
    a new path took 19 s to load instead of 2 s, and a fresh clone's warm `make test` about 50 s more. A
    content-named copy lets every checkout share one compile. Falls back to the sources where the cache
    folder cannot be written."""
    files = sorted(p for p in sources.iterdir() if p.suffix == ".mojo")
    digest = hashlib.sha256(b"".join(p.name.encode() + b"\0" + p.read_bytes() for p in files)).hexdigest()[:16]
    cache = Path(os.getenv("XDG_CACHE_HOME") or Path.home() / ".cache") / "maxwhisper" / f"kernels-{digest}"
    target = cache / sources.name  # the package keeps its name: the kernels import each other relatively
    if target.is_dir():
        return target
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".kernels-", dir=cache.parent))
        (staging / sources.name).mkdir()
        for p in files:  # exactly what the name hashes
            shutil.copy2(p, staging / sources.name / p.name)
        try:
            staging.rename(cache)  # atomic: a concurrent process either wins or finds it there
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return target if target.is_dir() else sources
    except OSError:
        return sources


def precompiled(kernels: Path) -> Path:
    """``kernels.mojoc`` beside a content-named kernels folder, built once with ``mojo precompile``.

    A graph given the source folder parses the Mojo sources each time it is built (measured: the decoder's
    step graph took 4.1 s to build, 2.8 s again in the same process); given the precompiled package, 1.3 s
    and then 0.01 s. Falls back to the folder where the package cannot be built or written."""
    target = kernels.parent / "kernels.mojoc"
    if target.is_file():
        return target
    if kernels == SOURCES:  # never write into the repository
        return kernels
    mojo = Path(sys.executable).parent / "mojo"
    mojo = str(mojo) if mojo.is_file() else shutil.which("mojo")
    if mojo is None:
        return kernels
    try:  # the package takes its name from the file's: build it as kernels.mojoc in a private folder
        staging = Path(tempfile.mkdtemp(prefix=".mojoc-", dir=kernels.parent)) / target.name
    except OSError:
        return kernels
    try:
        done = subprocess.run([mojo, "precompile", str(kernels), "-o", str(staging)], capture_output=True,
                              timeout=300, cwd=kernels.parent)
        if done.returncode == 0 and staging.is_file():
            staging.rename(target)  # atomic: a concurrent process either wins or finds it there
    except (OSError, subprocess.SubprocessError):
        pass
    shutil.rmtree(staging.parent, ignore_errors=True)
    return target if target.is_file() else kernels


KERNELS_PATH = precompiled(stable_kernels_path())
"""The Mojo kernels, precompiled where possible; pass it as ``Graph(..., custom_extensions=[KERNELS_PATH])``."""


PANEL, PK = 4, 8  # as gemv_nt.mojo: rows per panel, values of each row per step


def panels(w: np.ndarray) -> np.ndarray:
    """W (N, K) packed as gemv_nt reads it: (ceil(N / PANEL), ceil(K / PK), PANEL, PK), flattened, padded
    with zeros; each panel's PANEL rows give PK values in turn, so the kernel reads one stream."""
    n, k = w.shape
    w = np.pad(w, ((0, -n % PANEL), (0, -k % PK)))
    return np.ascontiguousarray(w.reshape(w.shape[0] // PANEL, PANEL, -1, PK).transpose(0, 2, 1, 3)).ravel()


def panels_size(n: int, k: int) -> int:
    """The length of ``panels(W)`` for W (n, k)."""
    return -(-n // PANEL) * PANEL * -(-k // PK) * PK


def gemv_nt(x: TensorValue, w: TensorValue, n, *, items_per_worker: int = 1, pairs: bool | None = None) -> TensorValue:
    """Return ``x @ W.T`` (M, n) for float32 x (M, K) and W (n, K) packed by ``panels`` (float32 or
    float16, rank 1), on CPU. ``n`` is an int or a symbolic dimension; ``items_per_worker`` splits the n
    outputs into ``2 * items_per_worker`` contiguous chunks; ``pairs`` forces the two-rows-per-vector micro
    kernel on or off (None: on where vectors hold 16 floats; both give the same bits).
    """
    if x.rank != 2 or w.rank != 1:
        raise ValueError(f"gemv_nt wants a rank-2 x and packed (rank-1) w, got {x.shape} and {w.shape}")
    if x.dtype != DType.float32 or w.dtype not in (DType.float32, DType.float16):
        raise ValueError(f"gemv_nt takes float32 x and float32 or float16 w, got {x.dtype} and {w.dtype}")
    out_type = TensorType(DType.float32, [x.shape[0], n], device=x.device)
    return ops.custom(
        "gemv_nt",
        x.device,
        [x, w],
        [out_type],
        parameters={"wdt": w.dtype, "items_per_worker": int(items_per_worker),
                    "pairs": -1 if pairs is None else int(pairs)},
    )[0].tensor
