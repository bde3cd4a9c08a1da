import os

import numpy as np
import pytest

import w2v
from conftest import REPO, SAMPLE

FIXTURE = REPO / "tools" / "fixtures" / "wav2vec2" / "base-safetensors"


def test_export_then_transcribe(tmp_path):
    output = tmp_path / "tiny.onnx"
    summary = w2v.export(FIXTURE, output)
    assert output.is_file()
    assert summary["precision"] == "fp32"
    assert summary["output"] == os.fspath(output)
    assert summary["output_bytes"] == output.stat().st_size
    assert summary["parameters"] > 0
    assert summary["info"]["sample_rate"] == 16000

    # A tiny random model: the text is noise, but it opens and runs.
    r = w2v.Recognizer(output)
    assert r.sample_rate == 16000
    t = r.transcribe_file(SAMPLE)
    assert isinstance(t.text, str)
    assert 3.1 < t.duration < 3.2
    t = r.transcribe(np.zeros(8000, dtype=np.float32), 16000)
    assert abs(t.duration - 0.5) < 0.01


def test_export_fp16_weights(tmp_path):
    full = w2v.export(FIXTURE, tmp_path / "full.onnx")
    half = w2v.export(FIXTURE, tmp_path / "half.onnx", fp16_weights=True)
    assert half["precision"] == "fp32"
    assert half["info"]["raw"]["w2v.weight_storage"] == "fp16"
    assert half["output_bytes"] < full["output_bytes"]
    t = w2v.Recognizer(tmp_path / "half.onnx").transcribe_file(SAMPLE)
    assert 3.1 < t.duration < 3.2
    with pytest.raises(w2v.W2vError, match="--fp16-weights"):
        w2v.export(FIXTURE, tmp_path / "int8.onnx", precision="int8", fp16_weights=True)


def test_export_errors(tmp_path):
    with pytest.raises(w2v.W2vError, match="no-such-folder"):
        w2v.export(tmp_path / "no-such-folder", tmp_path / "out.onnx")
    with pytest.raises(ValueError, match="precision"):
        w2v.export(FIXTURE, tmp_path / "out.onnx", precision="fp8")
    with pytest.raises(ValueError, match="target"):
        w2v.export(FIXTURE, tmp_path / "out.onnx", target="gpu")
    assert not (tmp_path / "out.onnx").exists()
