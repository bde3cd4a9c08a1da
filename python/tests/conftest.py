import os
import wave
from pathlib import Path

import numpy as np
import pytest

# python/tests -> the repository root (samples/, models/, tools/fixtures/).
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "zero-zero-six-seven.wav"
EXPECTED = "ZERO ZERO SIX SEVEN"


@pytest.fixture(scope="session")
def recognizer():
    import w2v

    return w2v.Recognizer()


@pytest.fixture(scope="session")
def sample_int16():
    """The README sample as int16 samples and its rate, read with the standard library."""
    with wave.open(os.fspath(SAMPLE)) as f:
        assert f.getsampwidth() == 2 and f.getnchannels() == 1
        rate = f.getframerate()
        data = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(np.int16)
    return data, rate
