"""`w2v serve` driven by the clients people use: the `openai` package's
`audio.transcriptions.create`, the `wyoming` package's `AsyncTcpClient` (as Home Assistant
uses it), and a `websockets` client streaming commands.

Run by tools/serve/test-clients.sh, which starts the server and sets W2V_HTTP / W2V_WYOMING.
"""

import asyncio
import json
import os
import wave
from pathlib import Path

import openai
import websockets
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "zero-zero-six-seven.wav"
HTTP = os.environ["W2V_HTTP"]
WYOMING = os.environ["W2V_WYOMING"]


def pcm(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        return w.readframes(w.getnframes()), w.getframerate()


def test_openai_client_transcribes_the_readme_sample():
    client = openai.OpenAI(base_url=f"http://{HTTP}/v1", api_key="unused")
    with open(SAMPLE, "rb") as f:
        t = client.audio.transcriptions.create(model="w2v", file=f)
    assert t.text == "ZERO ZERO SIX SEVEN"
    with open(SAMPLE, "rb") as f:
        v = client.audio.transcriptions.create(
            model="w2v",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    assert [w.word for w in v.words] == ["ZERO", "ZERO", "SIX", "SEVEN"]
    assert v.words[0].start < v.words[-1].end <= v.duration
    # `prompt` is used as hotwords: a held-out "zero" the model alone spells "ERO".
    zero = REPO.parent / "shared" / "data" / "fsdd" / "0_george_0.wav"
    with open(zero, "rb") as f:
        assert client.audio.transcriptions.create(model="w2v", file=f).text == "ERO"
    with open(zero, "rb") as f:
        t = client.audio.transcriptions.create(model="w2v", file=f, prompt="zero, one")
    assert t.text == "ZERO"
    models = client.models.list()
    assert [m.id for m in models.data] == ["w2v-default"]


def test_openai_client_sees_a_clear_error_for_bad_audio(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio at all")
    client = openai.OpenAI(base_url=f"http://{HTTP}/v1", api_key="unused")
    try:
        with open(bad, "rb") as f:
            client.audio.transcriptions.create(model="w2v", file=f)
    except openai.BadRequestError as e:
        assert "notes.wav" in str(e)
    else:
        raise AssertionError("bad audio was accepted")


def test_wyoming_client_transcribes_the_readme_sample():
    host, port = WYOMING.rsplit(":", 1)

    async def run():
        async with AsyncTcpClient(host, int(port)) as client:
            await client.write_event(Describe().event())
            info = Info.from_event(await client.read_event())
            assert info.asr[0].models[0].languages == ["en"]
            audio, rate = pcm(SAMPLE)
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            for i in range(0, len(audio), 4096):
                chunk = AudioChunk(rate=rate, width=2, channels=1, audio=audio[i : i + 4096])
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            event = await client.read_event()
            assert Transcript.is_type(event.type), event
            return Transcript.from_event(event).text

    assert asyncio.run(run()) == "ZERO ZERO SIX SEVEN"


def test_websocket_client_streams_and_receives_events():
    async def run():
        events = []
        async with websockets.connect(f"ws://{HTTP}/v1/listen?rate=16000") as ws:
            for name in ["go-up.wav", "no-stop.wav"]:
                audio, rate = pcm(REPO / "samples" / name)
                assert rate == 16000
                audio += bytes(2 * 16000)  # a second of silence ends the utterance
                for i in range(0, len(audio), 3200):
                    await ws.send(audio[i : i + 3200])
            await ws.send(json.dumps({"type": "stop"}))
            async for message in ws:
                m = json.loads(message)
                if m["type"] == "final":
                    return events, m
                assert m["type"] == "event", m
                events.append(m)
        raise AssertionError("closed without a final message")

    events, final = asyncio.run(run())
    assert [e["text"] for e in events] == ["GO UP", "NO STOP"], events
    assert final["text"] == "GO UP NO STOP"
