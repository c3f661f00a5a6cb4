"""Audio uploads and speech (gateway/providers/audio.py, the OpenAI provider's requests, the meter):
text formats made from verbose_json, the seconds billed, WAV lengths, prices per second and character."""

import pytest

from gateway import providers
from gateway.config.settings import DeploymentConfig
from gateway.providers import audio
from gateway.routing.balancer import Deployment
from gateway.routing.router import Outcome
from gateway.spend import meter as spend
from gateway.spend.meter import Meter
from gateway.wire.multipart import Upload
from gateway.wire.multipart import parse_form
from tests.fakes.openai_server import wav_bytes
from tests.unit.spend.test_spend import _Tracker


def wav(seconds, rate=16000, channels=1):
    return wav_bytes(seconds, rate=rate, channels=channels)


def make(model, **params):
    params.setdefault("api_key", "sk-x")
    return providers.build(DeploymentConfig(model_name="m", params={"model": model, **params}, model_info={}, index=0))


def test_wav_seconds_from_the_header_and_none_for_other_files():
    assert audio.wav_seconds(wav(3)) == 3.0
    assert audio.wav_seconds(wav(2, rate=8000, channels=2)) == 2.0
    assert audio.wav_seconds(b"ID3" + bytes(100)) is None
    assert audio.bound_seconds(Upload("a.mp3", "audio/mpeg", bytes(10_000))) == 20  # 500 bytes a second at least


def test_an_upload_goes_upstream_as_multipart_asking_verbose_json_for_text_formats():
    provider = make("openai/whisper-1")
    body = {"model": "m", "file": Upload("a.wav", "audio/wav", wav(1)), "response_format": "srt", "language": "en"}
    req = provider.build_request("transcriptions", provider.prepare_body("transcriptions", body), False)
    assert req.url == "https://api.openai.com/v1/audio/transcriptions"
    fields, files = parse_form(req.body, req.headers["Content-Type"], 10**7)
    assert fields == {"model": "whisper-1", "response_format": "verbose_json", "language": "en"}
    assert files["file"].data == wav(1) and req.headers["Authorization"] == "Bearer sk-x"


@pytest.mark.parametrize("fmt,media,text", [
    ("text", "text/plain", "hello there\n"),
    ("srt", "application/x-subrip", "1\n00:00:00,000 --> 00:00:01,500\nhello\n\n2\n00:00:01,500 --> 00:01:02,250\nthere\n"),
    ("vtt", "text/vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nhello\n\n00:00:01.500 --> 00:01:02.250\nthere\n"),
])
def test_text_formats_are_made_from_the_segments(fmt, media, text):
    data = {"text": "hello there", "duration": 62.25, "segments": [
        {"start": 0, "end": 1.5, "text": " hello"}, {"start": 1.5, "end": 62.25, "text": " there"}]}
    out = audio.from_upstream(data, {"response_format": fmt})
    assert out[audio.TEXT_BODY] == (media, text) and out["duration"] == 62.25
    assert audio.from_upstream(data, {"response_format": "verbose_json"}) is data


def test_seconds_billed_from_usage_duration_or_the_upload():
    upload = Upload("a.wav", "audio/wav", wav(4))
    assert audio.billed_seconds({"usage": {"type": "duration", "seconds": 7}}, upload) == (7.0, False)
    assert audio.billed_seconds({"duration": 3.5}, upload) == (3.5, False)
    assert audio.billed_seconds({"text": "x"}, upload) == (4, True)


def test_transcriptions_are_held_and_billed_per_second_and_speech_per_character():
    whisper = Deployment(make("openai/whisper-1"))
    body = {"model": "m", "file": Upload("a.wav", "audio/wav", wav(30))}
    assert spend.worst_case_cost([whisper], "transcriptions", body) == pytest.approx(30 * 0.0001)
    meter = Meter(_Tracker(), "r", None, "transcriptions", body, False)
    assert meter.bill_answer(Outcome(group="m", deployment=whisper),
                             {"text": "x", "usage": {"type": "duration", "seconds": 29}}) == pytest.approx(29 * 0.0001)
    tts = Deployment(make("openai/tts-1"))
    said = {"model": "m", "input": "x" * 1000, "voice": "alloy"}
    assert spend.worst_case_cost([tts], "speech", said) == pytest.approx(1000 * 1.5e-5)
    assert tts.priced and whisper.priced


def test_speech_priced_per_second_heard_from_a_wav_header_pcm_or_the_characters():
    tts = Deployment(make("openai/tts-1", input_cost_per_character=None, output_cost_per_second=0.001))
    assert tts.unit_prices == {"output_cost_per_second": 0.001} and tts.priced
    body = {"model": "m", "input": "x" * 30, "voice": "alloy", "response_format": "wav"}
    head = wav(2)[:64]
    assert audio.speech_seconds(body, head, len(wav(2))) == 2.0
    assert audio.speech_seconds({**body, "response_format": "pcm"}, b"\0" * 64, 96000) == 2.0
    assert audio.speech_seconds({**body, "response_format": "mp3"}, b"ID3", 5000) == 2.0  # 30 characters
    assert spend.worst_case_cost([tts], "speech", body) == pytest.approx(30 / 2.5 * 0.001)
    meter = Meter(_Tracker(), "r", None, "speech", body, True)
    stream = [wav(2)[:8192], wav(2)[8192:]]
    from gateway.wire.stream import ChunkStream
    assert b"".join(meter.watch(Outcome(group="m", deployment=tts), ChunkStream(None, "speech", iter(stream)),
                                True)) == wav(2)
    meter.close()
    assert meter.cost == pytest.approx(2 * 0.001) and meter.status == "success"
