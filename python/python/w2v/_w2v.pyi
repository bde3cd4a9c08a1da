# Type hints of the native module (python/src/lib.rs). The public API is w2v/__init__.py, which
# re-exports Transcript, Word and W2vError from here.
import os
from typing import List, Optional, Union

_Path = Union[str, os.PathLike[str]]

__version__: str

class W2vError(Exception):
    """An error from w2v; the message is one line and names the file or option at fault."""

class Word:
    """A word of a transcript, with its times in seconds and the model's confidence (0 to 1)."""

    @property
    def text(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def confidence(self) -> float: ...

class Transcript:
    """A transcript: text, words, the audio's duration (seconds), compute time and their ratio."""

    @property
    def text(self) -> str: ...
    @property
    def words(self) -> List[Word]: ...
    @property
    def duration(self) -> float: ...
    @property
    def compute_seconds(self) -> float: ...
    @property
    def real_time_factor(self) -> float: ...

class Recognizer:
    def __init__(
        self,
        model: Optional[_Path],
        backend: str,
        provider: str,
        threads: Optional[int],
        words: Optional[_Path],
        lm: Optional[_Path],
        hotwords: Optional[_Path],
    ) -> None: ...
    def transcribe(self, samples: bytes, sample_rate: int) -> Transcript: ...
    def transcribe_file(self, path: _Path) -> Transcript: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def model_path(self) -> _Path: ...
    @property
    def backend(self) -> str: ...
    @property
    def decoding(self) -> str: ...
    @property
    def execution_providers(self) -> List[str]: ...

def load_audio(path: _Path, sample_rate: int) -> bytes: ...
def export(
    input: _Path,
    output: _Path,
    precision: str,
    target: str,
    opset: Optional[int],
    quantize_conv: bool,
    eval: Optional[_Path],
    calibration: Optional[_Path],
    calibration_method: str,
    max_wer_increase: Optional[float],
    skip_report: bool,
    dict: Optional[_Path],
    fp16_weights: bool,
) -> str: ...
