"""maxwhisper: Whisper's encoder and decoder as MAX graphs, checked against PyTorch and benchmarked.

Data flows one way: weights -> layout -> graphs (encoder, decoder) -> session -> features -> tokens
(inference: openai-whisper's decoding loop on the MAX decoder) -> pipelines and the CLI.
"""
from maxwhisper.errors import MaxWhisperError

__version__ = "0.1.0"
__all__ = ["MaxWhisperError", "__version__"]
