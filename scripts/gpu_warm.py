"""Compile every graph the GPU tests and benchmarks use, each in its own process, all at once.

A GPU graph takes 60-150 s to compile on one core (an H200 host, MAX 26.7); the suite would compile them
one after another. Compiled here in parallel, the tests then load each from MAX's cache in seconds. A
compile uses about 1.4 cores (142% of 2 on the CPU); the others run niced, so the decoder's, the longest
(348 s among eight on a 16-core H100 box, 2026-11-27), gets the cores it can use. The warp kernels'
decoder (decoder_warps.mojo) is a small graph: it compiled in 14 s on the 2-core Zen 5 EPYC CI machine.
Usage: python scripts/gpu_warm.py [jobs...]   (default: all; prints each job's seconds or its error)
"""
import multiprocessing as mp
import os
import sys
import time
import traceback

JOBS = ["decoder-warps", "encoder-float32", "encoder-bfloat16", "encoder-float16", "decoder-float32", "conv-stem"]


def compile_one(job: str) -> str:
    if not job.startswith("decoder-"):  # the decoder's compile is the longest (348 s on an H100 box): it goes first
        os.nice(19)
    start = time.perf_counter()
    try:
        from maxwhisper import weights
        from maxwhisper.decoder import get_decoder
        from maxwhisper.encoder import get_encoder, load_conv_stem
        if job == "conv-stem":
            load_conv_stem("gpu")
        elif job == "decoder-warps":  # the step as decoder_warps's kernels: a small graph
            get_decoder(weights.load("bundled"), "gpu", fused=True, progress=lambda _: None)
        elif job.startswith("decoder-"):
            get_decoder(weights.load("bundled"), "gpu", job.split("-")[1], fused=False, progress=lambda _: None)
        else:
            dtype = job.split("-")[1]
            get_encoder(weights.load("bundled"), "gpu", dtype, progress=lambda _: None)
        return f"{job}: {time.perf_counter() - start:.0f} s"
    except Exception:
        return f"{job}: FAILED after {time.perf_counter() - start:.0f} s\n{traceback.format_exc(limit=3)}"


if __name__ == "__main__":
    jobs = sys.argv[1:] or JOBS
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        for line in pool.imap_unordered(compile_one, jobs):
            print(line, flush=True)
