"""The CPU decoder step past tiny.en: MAX against openai-whisper's eager PyTorch step, batch 1, one process.

Only tiny.en ships offline, so each size gets seeded random weights with its real dimensions (weights.random_model),
rounded to float16 as the released checkpoints store them: the MAX decoder then streams half weights, as it does
for a real checkpoint of that size. Features are PyTorch's encoder output for the long fixture clip's first window (for the 128-mel sizes,
large-v3 and turbo, seeded normal features of the same shape).
Both steps decode the same token from the same cache (tests/bench/steppers.py), in alternating blocks of STEPS steps
(a step right after PyTorch's finds its weights evicted from the L3 and took about twice as long on tiny.en), and their
logits are compared at the decoder's float32 tolerance. Then the step benchmark's 512 MiB read probe, whose rate sets
the floor: the bytes a step must read (its weights as stored, the cross keys and values, the self-attention cache)
at that rate, as the step benchmark counts them. PyTorch gets 2 threads, as the benchmarks do on the 2-core CI
machine.
Usage: python scripts/size_step_bench.py [SIZE ...] [--cache N] [--rounds N]   (default: tiny.en base.en small.en medium.en)
"""
import argparse
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from maxwhisper import audio, weights  # noqa: E402
from maxwhisper.decoder import get_decoder  # noqa: E402
from tests.helpers import assert_parity, half_rounded  # noqa: E402
from tests.bench.steppers import MaxStepper, TorchStepper  # noqa: E402
from tests.bench.test_decoder_bench import step_bytes, streaming_read_gbps  # noqa: E402


STEPS = 8  # steps of one implementation per block


def encoder_row(size: str, loaded, model, mel: np.ndarray) -> None:
    """One window through each encoder, alternating, 3 rounds: medians, their ratio and MAX's largest difference."""
    from maxwhisper.encoder import get_encoder
    window = np.ascontiguousarray(mel[:, :, :3000])
    encoder = get_encoder(loaded, "cpu", "float32")
    runs = {"max": lambda: encoder(window), "torch": lambda: model.encoder(torch.from_numpy(window)).numpy()}
    times, outs = {name: [] for name in runs}, {}
    with torch.no_grad():
        for _ in range(3):
            for name, run in runs.items():
                start = time.perf_counter()
                outs[name] = np.asarray(run())
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    diff = float(np.abs(outs["max"] - outs["torch"]).max() / np.abs(outs["torch"]).max())
    print(f"  {size} encoder, one window: MAX {med['max'] * 1e3:.0f} ms, PyTorch {med['torch'] * 1e3:.0f} ms, "
          f"MAX / PyTorch {med['max'] / med['torch']:.3f}, max|diff| {diff:.1e} of max|PyTorch|", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sizes", nargs="*", default=["tiny.en", "base.en", "small.en", "medium.en"])
    p.add_argument("--cache", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--encoder", action="store_true",
                   help="also one window through the MAX encoder and PyTorch's, 3 rounds each, alternating (a new "
                        "size's encoder graph compiles for minutes)")
    args = p.parse_args()
    torch.set_num_threads(2)
    mel = audio.log_mel(audio.load_audio("fixtures/audio/long.wav"))[None]
    print("size, d_model x layers, MAX storage, MAX ms, PyTorch ms, MAX / PyTorch, MAX GB/s, of floor, probe GB/s, "
          "compile s")
    for size in args.sizes:
        loaded = half_rounded(weights.random_model(size, seed=0))
        model = loaded.whisper_model("cpu").eval()
        if loaded.dims.n_mels == mel.shape[1]:
            with torch.no_grad():
                features = model.encoder(torch.from_numpy(np.ascontiguousarray(mel[:, :, :3000])))
        else:  # 128 mels (large-v3, turbo): seeded features of the encoder output's scale (layer-normed)
            features = torch.from_numpy(np.random.default_rng(0).standard_normal(
                (1, loaded.dims.n_audio_ctx, loaded.dims.n_audio_state)).astype(np.float32))
        start = time.perf_counter()
        decoder = get_decoder(loaded, "cpu")
        compile_s = time.perf_counter() - start
        steppers = {"max": MaxStepper(decoder, features, 1, args.cache),
                    "torch": TorchStepper(model, features, 1, args.cache, "cpu")}
        times = {name: [] for name in steppers}
        outputs = {}
        for _ in range(args.rounds):  # a block of STEPS steps of each in turn: the medians are steps that follow steps
            for name, stepper in steppers.items():
                for _ in range(STEPS):
                    stepper.restore()
                    start = time.perf_counter()
                    outputs[name] = stepper.step()
                    times[name].append(time.perf_counter() - start)
        steppers["torch"].close()
        if args.encoder and loaded.dims.n_mels == mel.shape[1]:
            encoder_row(size, loaded, model, mel)
        probe = streaming_read_gbps("cpu")
        assert_parity({"logits": outputs["max"]}, {"logits": outputs["torch"]}, "decoder-float32")
        dims = loaded.dims
        nbytes = step_bytes(dims, 1, args.cache, steppers["max"].weight_bytes)  # as the step benchmark counts them
        med = {name: statistics.median(t) for name, t in times.items()}
        floor = nbytes / probe / 1e9
        print(f"{size}, {dims.n_text_state} x {dims.n_text_layer}, {decoder.cfg.storage}, {med['max'] * 1e3:.2f}, "
              f"{med['torch'] * 1e3:.2f}, {med['max'] / med['torch']:.3f}, {nbytes / med['max'] / 1e9:.1f}, "
              f"{floor / med['max']:.2f}, {probe:.1f}, {compile_s:.0f}", flush=True)


if __name__ == "__main__":
    main()
