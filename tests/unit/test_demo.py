"""`make demo`'s table and verdict, with the paths stubbed: it fails when a MAX path's text differs from PyTorch's."""
import pytest

from maxwhisper import demo

pytestmark = pytest.mark.unit


class FakePipeline:
    """A path that 'transcribes' every clip to its own text, in 1 s (encode 0.25 s) of a 10 s clip."""
    texts: dict[str, str] = {}
    calls: list[tuple[str, str]] = []

    def __init__(self, impl, model="bundled", dtype="float32", progress=None):
        self.impl, self.timings = impl, {"load": 0.1, "compile": 0.0}

    def transcribe(self, clip):
        self.calls.append((self.impl, clip.name))
        return {"text": self.texts.get(self.impl, " the same words"), "audio_seconds": 10.0,
                "timings": {"encode": 0.25, "decode": 0.75, "total": 1.0}}


@pytest.mark.parametrize("max_text, code, verdict", [
    (" the same words", 0, "OK: both MAX paths give the same text as PyTorch on all 2 clips"),
    (" other words", 1, "FAIL: a MAX path's text differs from PyTorch's on 2 clip(s)"),
])
def test_demo_table_and_verdict(tmp_path, monkeypatch, capsys, max_text, code, verdict):
    (tmp_path / "audio").mkdir()
    for name, size in (("a", 20), ("b", 10)):
        (tmp_path / "audio" / f"{name}.wav").write_bytes(b"0" * size)
        (tmp_path / "audio" / f"{name}.txt").write_text("the same words")
    monkeypatch.setattr(demo, "Pipeline", FakePipeline)
    monkeypatch.setattr(demo, "cuda_available", lambda: False)
    monkeypatch.setattr(FakePipeline, "texts", {"max": max_text})
    monkeypatch.setattr(FakePipeline, "calls", [])
    assert demo.run_demo(tmp_path, progress=lambda message: None) == code
    impls = ["cpu", "max-encoder", "max", "faster-whisper"]
    # each path warmed up, untimed, on the shortest clip before any timed row
    assert FakePipeline.calls == [(impl, "b.wav") for impl in impls] + [(impl, clip) for clip in ("a.wav", "b.wav")
                                                                        for impl in impls]
    out = capsys.readouterr().out
    assert verdict in out and "x real time" in out.splitlines()[0]
    rows = [line.split() for line in out.splitlines()[2:] if line.startswith(("a ", "b "))]
    assert [r[2] for r in rows] == ["cpu", "max-encoder", "max", "faster-whisper"] * 2
    assert all(r[6:10] == ["0.25", "0.75", "1.00", "10.0x"] for r in rows), rows
    assert {r[5] for r in rows if r[2] == "max"} == {"yes" if code == 0 else "NO"}
