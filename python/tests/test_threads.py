import threading
import time

import numpy as np

import w2v
from conftest import EXPECTED, SAMPLE


def test_gil_is_released_while_transcribing(recognizer):
    # About 25 s of audio: long enough that the call takes a while.
    samples = np.tile(w2v.load_audio(SAMPLE, 16000), 10)
    window = {}

    def work():
        window["start"] = time.perf_counter()
        window["transcript"] = recognizer.transcribe(samples, 16000)
        window["end"] = time.perf_counter()

    worker = threading.Thread(target=work)
    ticks = []
    worker.start()
    while worker.is_alive():
        # Pure-Python work: it needs the GIL, which the worker would hold if transcribe kept it.
        ticks.append(time.perf_counter())
        sum(range(1000))
        time.sleep(0.001)
    worker.join()
    during = [t for t in ticks if window["start"] < t < window["end"]]
    assert window["transcript"].text.startswith(EXPECTED)
    # A call holding the GIL would allow no tick inside its window.
    assert len(during) >= 5, (len(during), window["end"] - window["start"])


def test_two_threads_two_recognizers():
    results = {}
    errors = []

    def work(name):
        try:
            r = w2v.Recognizer(threads=1)
            results[name] = r.transcribe_file(SAMPLE).text
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    assert results == {"a": EXPECTED, "b": EXPECTED}


def test_threads_share_one_recognizer(recognizer):
    samples = w2v.load_audio(SAMPLE, 16000)
    results = []

    def work():
        for _ in range(2):
            results.append(recognizer.transcribe(samples, 16000).text)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results == [EXPECTED] * 6
