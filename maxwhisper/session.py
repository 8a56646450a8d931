"""What the encoder and decoder graphs share at run time: the device, the MAX session that loads a graph on
it, dtypes, configuration keys and the checks every input array passes before it reaches a graph."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch
from whisper.model import ModelDimensions

from maxwhisper.errors import MaxWhisperError

DEVICES = ("cpu", "gpu")
LN_EPS = 1e-5  # Whisper's LayerNorm epsilon, in both graphs

_SESSIONS: dict[str, object] = {}


def max_device(device: str):
    """The max.driver device for 'cpu' or 'gpu', with a clear error when there is no GPU."""
    from max.driver import CPU, Accelerator, accelerator_count
    if device == "cpu":
        return CPU()
    if accelerator_count() == 0:
        raise MaxWhisperError("no GPU: MAX sees no accelerator on this machine; use --device cpu (or --impl cpu)")
    return Accelerator()


def get_session(device: str):
    """The process's one MAX InferenceSession on `device`: every graph loads through it."""
    if device not in _SESSIONS:
        from max.engine import InferenceSession
        _SESSIONS[device] = InferenceSession(devices=[max_device(device)])
    return _SESSIONS[device]


def max_dtype(name: str):
    from max.dtype import DType
    return {"float32": DType.float32, "bfloat16": DType.bfloat16, "float16": DType.float16}[name]


def config_key(cfg) -> tuple:
    """A config dataclass's hashable identity: every field, ModelDimensions (not hashable) as its values."""
    values = (getattr(cfg, f.name) for f in dataclasses.fields(cfg))
    return tuple(tuple(vars(v).values()) if isinstance(v, ModelDimensions) else v for v in values)


def stderr_line(msg: str) -> None:
    """The default progress printer (compiles take minutes on a first run)."""
    print(msg, file=sys.stderr, flush=True)


def require_array(value, what: str):
    """`value` if it is a numpy array or a torch tensor, else a clear error."""
    if not isinstance(value, (np.ndarray, torch.Tensor)):
        raise MaxWhisperError(f"{what} given as a {type(value).__name__}: expected a numpy array or a torch tensor")
    return value


def as_float32(value, what: str, expected: str, fix: str) -> np.ndarray:
    """A float array or tensor as a contiguous float32 array; other dtypes and NaN or Inf get a clear error."""
    if not (value.is_floating_point() if isinstance(value, torch.Tensor) else value.dtype.kind == "f"):
        raise MaxWhisperError(f"{what} of dtype {value.dtype}: expected {expected}")
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    value = np.ascontiguousarray(value, dtype=np.float32)
    if not np.isfinite(value).all():
        raise MaxWhisperError(f"NaN or Inf in the {what}; {fix}")
    return value
