import os
import pathlib

import numpy as np
import pytest

import w2v
from conftest import EXPECTED, REPO, SAMPLE


def test_transcribe_file(recognizer):
    t = recognizer.transcribe_file(SAMPLE)
    assert isinstance(t, w2v.Transcript)
    assert t.text == EXPECTED
    assert str(t) == EXPECTED
    assert 3.1 < t.duration < 3.2
    assert t.real_time_factor > 0
    assert t.compute_seconds > 0
    assert repr(t).startswith("Transcript(text='ZERO ZERO SIX SEVEN', words=4, duration=")


def test_transcribe_file_takes_str_and_pathlike(recognizer):
    assert recognizer.transcribe_file(os.fspath(SAMPLE)).text == EXPECTED
    assert recognizer.transcribe_file(pathlib.PurePath(SAMPLE)).text == EXPECTED


def test_transcribe_float32(recognizer):
    samples = w2v.load_audio(SAMPLE, 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert recognizer.sample_rate == 16000
    assert recognizer.transcribe(samples, 16000).text == EXPECTED


def test_transcribe_float64(recognizer):
    samples = w2v.load_audio(SAMPLE, 16000).astype(np.float64)
    assert recognizer.transcribe(samples, 16000).text == EXPECTED


def test_transcribe_int16(recognizer, sample_int16):
    samples, rate = sample_int16
    assert samples.dtype == np.int16
    t = recognizer.transcribe(samples, rate)
    assert t.text == EXPECTED
    # Scaled by 1/32768: the same transcript as the float samples.
    floats = recognizer.transcribe(samples.astype(np.float32) / 32768, rate)
    assert [w.text for w in t.words] == [w.text for w in floats.words]
    assert [w.start for w in t.words] == [w.start for w in floats.words]


def test_transcribe_non_contiguous(recognizer):
    samples = w2v.load_audio(SAMPLE, 16000)
    stereo = np.stack([samples, samples], axis=1)  # a column is a strided view
    assert recognizer.transcribe(stereo[:, 0], 16000).text == EXPECTED


def test_8khz_is_resampled(recognizer):
    samples = w2v.load_audio(SAMPLE, 8000)
    at_16k = w2v.load_audio(SAMPLE, 16000)
    assert abs(len(samples) * 2 - len(at_16k)) <= 2
    t = recognizer.transcribe(samples, 8000)
    assert t.text == EXPECTED
    assert abs(t.duration - len(samples) / 8000) < 0.01


def test_words_have_increasing_times(recognizer):
    t = recognizer.transcribe_file(SAMPLE)
    assert [w.text for w in t.words] == EXPECTED.split()
    previous_end = 0.0
    for w in t.words:
        assert isinstance(w, w2v.Word)
        assert previous_end <= w.start < w.end <= t.duration + 0.05
        assert 0.0 <= w.confidence <= 1.0
        previous_end = w.end
    assert repr(t.words[0]).startswith("Word(text='ZERO', start=")


def test_bad_file_names_the_file(recognizer, tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"this is not a WAV file" * 10)
    with pytest.raises(w2v.W2vError) as e:
        recognizer.transcribe_file(bad)
    assert str(bad) in str(e.value)
    assert "\n" not in str(e.value)

    missing = tmp_path / "missing.wav"
    with pytest.raises(w2v.W2vError, match="missing.wav: no such file"):
        recognizer.transcribe_file(missing)


def test_w2v_error_is_an_exception():
    assert issubclass(w2v.W2vError, Exception)
    assert w2v.W2vError.__module__ == "w2v"


def test_missing_model(tmp_path):
    model = tmp_path / "nowhere.onnx"
    with pytest.raises(w2v.W2vError) as e:
        w2v.Recognizer(model)
    assert "nowhere.onnx" in str(e.value)


def test_not_a_model(tmp_path):
    model = tmp_path / "garbage.onnx"
    model.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(w2v.W2vError, match="garbage.onnx"):
        w2v.Recognizer(model)


def test_wrong_shape_and_dtype(recognizer):
    samples = w2v.load_audio(SAMPLE, 16000)
    with pytest.raises(ValueError, match="1-D"):
        recognizer.transcribe(np.stack([samples, samples]), 16000)
    with pytest.raises(ValueError, match="1-D"):
        recognizer.transcribe(np.float32(0.5), 16000)
    with pytest.raises(TypeError, match="int32"):
        recognizer.transcribe(samples.astype(np.int32), 16000)
    with pytest.raises(TypeError, match="complex"):
        recognizer.transcribe(samples.astype(np.complex64), 16000)
    with pytest.raises(ValueError, match="positive"):
        recognizer.transcribe(samples, 0)
    with pytest.raises(TypeError):
        recognizer.transcribe(samples, 16000.5)


def test_bad_options():
    with pytest.raises(ValueError, match="backend"):
        w2v.Recognizer(backend="bogus")
    with pytest.raises(ValueError, match="provider"):
        w2v.Recognizer(provider="bogus")
    with pytest.raises(ValueError, match="threads"):
        w2v.Recognizer(threads=0)


def test_properties_and_repr(recognizer):
    assert recognizer.backend == "tract"
    assert recognizer.decoding == "greedy"
    assert recognizer.execution_providers == []
    assert recognizer.model_path.endswith("default.onnx")
    assert os.path.isfile(recognizer.model_path)
    assert repr(recognizer).startswith("Recognizer(model=")


def test_explicit_model_and_word_list():
    r = w2v.Recognizer(
        REPO / "models" / "default.onnx",
        words=REPO / "models" / "default.words.txt",
        threads=1,
    )
    assert r.decoding == "lexicon"
    assert r.transcribe_file(SAMPLE).text == EXPECTED


def test_missing_word_list(tmp_path):
    with pytest.raises(w2v.W2vError, match="words.txt"):
        w2v.Recognizer(words=tmp_path / "words.txt")


def _ort_library_present():
    return bool(os.environ.get("ORT_DYLIB_PATH")) or (REPO / ".ort" / "lib").is_dir()


@pytest.mark.skipif(not _ort_library_present(), reason="no ONNX Runtime library (tools/fetch-ort.sh)")
def test_onnx_runtime_backend():
    r = w2v.Recognizer(backend="ort", provider="cpu")
    assert r.backend == "ort"
    assert r.execution_providers == ["CPU"]
    assert r.transcribe_file(SAMPLE).text == EXPECTED
