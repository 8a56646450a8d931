"""The stages of both models that the parity suite compares: the taps each MAX graph outputs, the PyTorch
reference records (reference.py), and the tolerance tables key (metrics.py)."""


def encoder_tap_names(n_layer: int) -> list[str]:
    """The encoder's taps, in graph order; the last one is the encoder output."""
    return ["conv1", "conv2", "pos_emb", *(f"block{i}" for i in range(n_layer)), "ln_post"]


def decoder_tap_names(n_layer: int) -> list[str]:
    """The decoder step's taps, in order: the embedding sum, each block's output, the final LayerNorm."""
    return ["embed", *(f"block{i}" for i in range(n_layer)), "ln"]
