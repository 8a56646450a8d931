"""The host's part of a captured single-token decoder step, timed on the CPU with the GPU replay stubbed out.

A replayed step on a GPU is the replay, the logits' copy back, and the host's Python around them (the step's
checks, its input arrays, the input copies): this times that last part alone, as DecoderState.step runs it
for a captured step (CapturedStep), with MAX's capture handing back one step's outputs and its replay doing
nothing. The logits come back through a host buffer (CapturedStep.fetch), so the step also times that copy,
which on the CPU is MAX's host-to-host copy through its queue and on a GPU a DMA copy; the step is timed again
with the fetch stubbed out as well, which leaves the host's Python. Measured on the Zen 5 EPYC (AMD EPYC,
AVX-512), the host's Python: 18.4 us before CapturedStep.step's fast path, 11.6-12.2 us after (no fetch then).
The whole stubbed step, waiting for the logits' copy by the device's synchronize or by an event polled
(MAXWHISPER_STEP_WAIT=spin), medians of 6 interleaved rounds of 1900 steps (2026-11-27, Zen 5 EPYC, two runs):
17.2-27.6 and 17.5-30.9 us against 13.8-14.2 and 13.6-13.7 us.
Usage: python scripts/captured_step_host.py
"""
import numpy as np
from gpu_step_profile import rewound

from maxwhisper import weights
from maxwhisper.decoder import CapturedStep, get_decoder
from maxwhisper.paired import timed


class StubbedReplay:
    def __init__(self, outputs):
        self.outputs = outputs

    def capture(self, key, *inputs):
        return self.outputs

    def replay(self, key, *inputs):
        pass


def stubbed_capture(decoder, state) -> CapturedStep:
    """`state` (3 tokens decoded) given a CapturedStep whose capture hands back one real step's outputs and whose
    replay does nothing: its single-token steps then run as a replayed GPU step's host side does."""
    inputs = [np.zeros((1, 1), np.int64), np.array([3], np.int64), np.zeros((1, 1), np.float32),
              np.zeros(1, np.int64), np.array([3], np.int64)]
    outputs = decoder.step_model.execute(*map(decoder._to_device, inputs), *state.caches, *state.cross)
    model, decoder.step_model = decoder.step_model, StubbedReplay(outputs)
    try:
        state._captured, state._single_token_inputs = CapturedStep(state, inputs), None  # the GPU's path: no host-buffer step
    finally:
        decoder.step_model = model
    return state._captured


def main() -> None:
    decoder = get_decoder(weights.load("bundled"), "cpu", progress=lambda _: None)
    state = decoder.new_state(np.zeros((1, 1500, 384), np.float32))
    state.step(np.zeros((1, 3), np.int64))
    graph, step = stubbed_capture(decoder, state), rewound(state, np.full((1, 1), 440, np.int64))

    def median_us() -> float:
        return np.median([timed(step) for _ in range(2000)][100:]) * 1e6
    medians = {False: [], True: []}  # by synchronize, by an event polled: 6 rounds, each order in turn
    for round_ in range(6):
        for spin in (True, False) if round_ % 2 else (False, True):
            graph.spin = spin
            medians[spin].append(median_us())
    graph.spin = False
    print(f"captured step, replay stubbed out, medians of 6 interleaved rounds: waiting by the synchronize "
          f"{', '.join(f'{m:.1f}' for m in medians[False])} us; by an event polled "
          f"{', '.join(f'{m:.1f}' for m in medians[True])} us", flush=True)
    whole = medians[False][-1]
    logits = graph.fetch()
    graph.fetch = lambda: logits  # the fetch stubbed out too: what is left is the host's Python
    print(f"captured step, replay stubbed out: median {whole:.1f} us; without the logits' fetch "
          f"{median_us():.1f} us (the host's Python)")


if __name__ == "__main__":
    main()
