"""Offline wav2vec 2.0 speech recognition: the w2v Rust library from Python.

Open a model once, then transcribe numpy arrays or audio files. With no model given, the
shipped model (``models/default.onnx``) is used:

>>> import w2v
>>> recognizer = w2v.Recognizer()
>>> transcript = recognizer.transcribe_file("samples/zero-zero-six-seven.wav")
>>> print(transcript.text)
ZERO ZERO SIX SEVEN
>>> [word.text for word in transcript.words]
['ZERO', 'ZERO', 'SIX', 'SEVEN']

Samples in memory, at any sample rate (other rates than the model's are resampled):

>>> samples = w2v.load_audio("samples/zero-zero-six-seven.wav", 8000)
>>> recognizer.transcribe(samples, 8000).text
'ZERO ZERO SIX SEVEN'

Errors from the library (a file that cannot be read, a model that cannot be opened) are
:class:`W2vError`, with a one-line message that names the file:

>>> recognizer.transcribe_file("missing.wav")
Traceback (most recent call last):
    ...
w2v.W2vError: missing.wav: no such file
"""

from __future__ import annotations

import json
import operator
import os
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ._w2v import Recognizer as _Recognizer
from ._w2v import Transcript, W2vError, Word, __version__
from ._w2v import export as _export
from ._w2v import load_audio as _load_audio

__all__ = [
    "Recognizer",
    "Transcript",
    "Word",
    "W2vError",
    "export",
    "load_audio",
    "__version__",
]

PathLike = Union[str, "os.PathLike[str]"]


class Recognizer:
    """A speech recognizer: one model on one runtime, with its decoder loaded.

    Args:
        model: an ONNX model made by ``w2v export`` (or :func:`export`). ``None`` opens the
            shipped model: the ``W2V_MODEL`` environment variable, else ``models/default.onnx``
            of the source tree the package was built from (``pip install ./python`` bakes that
            path in; set ``W2V_MODEL`` or pass ``model`` if the tree moves).
        backend: ``"tract"`` (pure Rust, CPU; the default) or ``"ort"`` (ONNX Runtime: CPU,
            CUDA, TensorRT; its library comes from ``ORT_DYLIB_PATH`` or ``tools/fetch-ort.sh``).
        provider: ONNX Runtime's execution provider: ``"auto"``, ``"cpu"``, ``"cuda"`` or
            ``"tensorrt"``.
        threads: intra-op threads; ``None`` lets the runtime decide.
        words: a word list: transcripts use only these words.
        lm: an ARPA n-gram language model for beam search.
        hotwords: phrases to favour, one per line, optionally ending in `` :WEIGHT``.

    Raises:
        W2vError: the model or a decoder file cannot be opened (the message names it).
        ValueError: an unknown backend or provider, or ``threads=0``.

    Threads: each call releases the GIL while it computes, so other Python threads run
    meanwhile. One recognizer runs one call at a time (concurrent calls on it wait their turn);
    give each thread its own recognizer to transcribe in parallel.
    """

    def __init__(
        self,
        model: Optional[PathLike] = None,
        backend: str = "tract",
        provider: str = "auto",
        threads: Optional[int] = None,
        words: Optional[PathLike] = None,
        lm: Optional[PathLike] = None,
        hotwords: Optional[PathLike] = None,
    ) -> None:
        self._inner = _Recognizer(model, backend, provider, threads, words, lm, hotwords)

    def transcribe(self, samples: Any, sample_rate: int) -> Transcript:
        """Transcribe mono samples at ``sample_rate`` Hz.

        Args:
            samples: a 1-D numpy array (or anything ``numpy.asarray`` takes): float32 or
                float64 in ``[-1, 1]``, or int16 (scaled by 1/32768).
            sample_rate: the samples' rate in Hz; other rates than :attr:`sample_rate` are
                resampled.

        Raises:
            TypeError: an unsupported dtype.
            ValueError: not 1-D (mix channels down first), or a rate that is not positive.
            W2vError: the runtime failed.
        """
        return self._inner.transcribe(_float32_bytes(samples), _rate(sample_rate))

    def transcribe_file(self, path: PathLike) -> Transcript:
        """Decode and transcribe an audio file (WAV, FLAC, MP3, OGG/Vorbis; any rate, channels
        are mixed down).

        Raises:
            W2vError: the file cannot be read or decoded (the message names it).
        """
        return self._inner.transcribe_file(path)

    @property
    def sample_rate(self) -> int:
        """The sample rate the model runs at, in Hz."""
        return self._inner.sample_rate

    @property
    def model_path(self) -> str:
        """The model file."""
        return os.fspath(self._inner.model_path)

    @property
    def backend(self) -> str:
        """``"tract"`` or ``"ort"``."""
        return self._inner.backend

    @property
    def decoding(self) -> str:
        """How transcripts are decoded: ``"greedy"``, ``"lexicon"`` (a word list) or ``"beam"``."""
        return self._inner.decoding

    @property
    def execution_providers(self) -> List[str]:
        """With ONNX Runtime: the execution providers registered, in priority order."""
        return self._inner.execution_providers

    def __repr__(self) -> str:
        return (
            f"Recognizer(model={self.model_path!r}, backend={self.backend!r}, "
            f"decoding={self.decoding!r}, sample_rate={self.sample_rate})"
        )


def load_audio(path: PathLike, sample_rate: int) -> "np.ndarray":
    """Decode an audio file (WAV, FLAC, MP3, OGG/Vorbis) to mono float32 samples at
    ``sample_rate`` Hz.

    Raises:
        W2vError: the file cannot be read or decoded (the message names it).
    """
    data = _load_audio(path, _rate(sample_rate))
    return np.frombuffer(data, dtype=np.float32).copy()


def export(
    input: PathLike,
    output: PathLike,
    precision: str = "fp32",
    target: str = "cpu",
    *,
    opset: Optional[int] = None,
    quantize_conv: bool = False,
    eval: Optional[PathLike] = None,
    calibration: Optional[PathLike] = None,
    calibration_method: str = "percentile",
    max_wer_increase: Optional[float] = None,
    skip_report: bool = False,
    dict: Optional[PathLike] = None,
    fp16_weights: bool = False,
) -> Dict[str, Any]:
    """Export a checkpoint to a self-describing ONNX model, as ``w2v export`` does.

    Args:
        input: a Hugging Face ``Wav2Vec2ForCTC`` folder (safetensors or ``.bin``), a fairseq
            ``.pt`` checkpoint, or an fp32 model made by ``w2v export`` (to reduce its precision).
        output: the ``.onnx`` file to write.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        target: for int8, ``"cpu"`` (dynamic quantization) or ``"tensorrt"`` (QDQ, calibrated).
        opset: the ONNX opset (17 to 21); ``None`` for the default.
        quantize_conv: int8: quantize the feature encoder's convolutions too.
        eval: ``path<TAB>transcript`` rows for the accuracy report of fp16 and int8 exports.
        calibration: rows whose audio calibrates int8 TensorRT activation scales.
        calibration_method: ``"percentile"`` or ``"entropy"``.
        max_wer_increase: fail (writing nothing) when the WER rises by more than this many
            percentage points.
        skip_report: skip the accuracy report of reduced-precision exports.
        dict: a fairseq checkpoint's dictionary, if not the one beside it.
        fp16_weights: fp32: store the weights as float16 (half the file); the model still
            computes in float32.

    Returns:
        The summary ``w2v export --json`` prints: ``output``, ``parameters``,
        ``output_bytes``, ``precision``, ``opset``, ``seconds``, ``info`` (the model's metadata),
        and ``report`` for reduced precisions.

    Raises:
        W2vError: the checkpoint cannot be read or exported (the message names the file).
        ValueError: an unknown precision, target or calibration method.
    """
    summary = _export(
        input,
        output,
        precision,
        target,
        opset,
        quantize_conv,
        eval,
        calibration,
        calibration_method,
        max_wer_increase,
        skip_report,
        dict,
        fp16_weights,
    )
    return json.loads(summary)


def _rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool):
        raise TypeError("sample_rate must be an int, not bool")
    rate = operator.index(sample_rate)
    if rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {rate}")
    return rate


def _float32_bytes(samples: Any) -> bytes:
    """``samples`` as native-endian float32 bytes, checked and converted."""
    array = np.asarray(samples)
    if array.ndim != 1:
        raise ValueError(
            f"samples must be a 1-D array of mono samples, got shape {array.shape}; "
            "mix channels down first (for example samples.mean(axis=1))"
        )
    if array.dtype == np.int16:
        array = array.astype(np.float32) * np.float32(1.0 / 32768.0)
    elif array.dtype.kind != "f":
        raise TypeError(
            f"samples: dtype {array.dtype} is not supported: expected float32, float64 or int16"
        )
    return np.ascontiguousarray(array, dtype=np.float32).tobytes()
