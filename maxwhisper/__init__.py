"""maxwhisper: Whisper's audio encoder as a MAX graph, checked against PyTorch and benchmarked.

Data flows one way: weights -> layout -> encoder (graph, session) -> features -> pipelines (decoder).
"""
from maxwhisper.errors import MaxWhisperError

__version__ = "0.1.0"
__all__ = ["MaxWhisperError", "__version__"]
