"""Audio: Whisper-style uploads (transcriptions, translations) to an upstream and their answers back,
and the seconds of audio a call is billed for. Pure.

Text answers (`response_format` text, srt, vtt) are made here from the upstream's JSON: the upstream
is asked for `verbose_json` (Whisper models) or `json`, so every answer carries what billing needs
(its duration or usage) and is read the same way, whatever the format the client wants.
"""

import math
import struct

from gateway.wire.multipart import encode_form

TEXT_FORMATS = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
# Bytes a second of audio takes at the least, for a file whose length cannot be read (a bound for
# holds: low-bitrate speech codecs run at about 6 kbit/s).
MIN_BYTES_PER_SECOND = 500
TEXT_BODY = "_text_body"  # an answer key: (media type, text) the client gets instead of JSON


def upload_request(body):
    """(content type, body) of the multipart request for a prepared transcription/translation body."""
    fields = {k: v for k, v in body.items() if k != "file" and v is not None}
    wanted = fields.get("response_format") or "json"
    if wanted in TEXT_FORMATS:
        fields["response_format"] = "verbose_json" if "whisper" in str(body.get("model")).lower() else "json"
    return encode_form(fields, {"file": body["file"]})


def from_upstream(data, body):
    """The upstream's JSON answer as the client asked for it: as it is for json / verbose_json, else
    a text answer (TEXT_BODY) made from its text and segments; the seconds billed kept beside it."""
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError("no transcript")
    wanted = body.get("response_format") or "json"
    if wanted not in TEXT_FORMATS:
        return data
    text = data["text"]
    if wanted == "srt":
        text = _cues(data, "srt")
    elif wanted == "vtt":
        text = "WEBVTT\n\n" + _cues(data, "vtt")
    out = {TEXT_BODY: (TEXT_FORMATS[wanted], text if text.endswith("\n") else text + "\n")}
    for name in ("usage", "duration"):
        if name in data:
            out[name] = data[name]
    return out


def _cues(data, kind):
    segments = data.get("segments") or [{"start": 0.0, "end": float(data.get("duration") or 0), "text": data["text"]}]
    sep = "," if kind == "srt" else "."
    out = []
    for n, seg in enumerate(segments, 1):
        stamp = f"{_clock(seg.get('start'), sep)} --> {_clock(seg.get('end'), sep)}"
        out.append((f"{n}\n" if kind == "srt" else "") + f"{stamp}\n{str(seg.get('text', '')).strip()}\n")
    return "\n".join(out)


def _clock(seconds, sep):
    ms = int(round(float(seconds or 0) * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def wav_layout(data):
    """(bytes a second, where the samples start, their declared size) of a RIFF/WAVE file's header,
    or None when it is not one."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, rate, block = 12, None, None
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk == b"fmt " and size >= 16:
            _fmt, channels, rate, _bps, block = struct.unpack_from("<HHIIH", data, offset + 8)
        elif chunk == b"data" and rate and block:
            return rate * block, offset + 8, size
        offset += 8 + size + (size & 1)
    return None


def wav_seconds(data):
    """The duration of a RIFF/WAVE file from its header, or None when it is not one."""
    layout = wav_layout(data)
    if layout is None:
        return None
    per_second, start, size = layout
    return min(size, len(data) - start) / per_second


PCM_BYTES_PER_SECOND = 48000  # OpenAI's `pcm`: 24 kHz, 16-bit, mono
CHARACTERS_PER_SECOND = 15  # speech at its usual pace, for audio whose length cannot be read
BOUND_CHARACTERS_PER_SECOND = 2.5  # the slowest speech (speed 0.25 and pauses), for holds


def speech_seconds(body, head, total):
    """Seconds of speech heard: from a WAV header or raw PCM's size, else from the characters spoken."""
    fmt = body.get("response_format")
    layout = wav_layout(head) if head[:4] == b"RIFF" else None
    if layout is not None:  # the bytes that came after the header, as many as it declares at most
        per_second, start, size = layout
        return min(size, max(0, total - start)) / per_second
    if fmt == "pcm":
        return total / PCM_BYTES_PER_SECOND
    return len(body.get("input") or "") / CHARACTERS_PER_SECOND


def speech_bound_seconds(body):
    """The most seconds a speech call can produce (for holds)."""
    return len(body.get("input") or "") / BOUND_CHARACTERS_PER_SECOND


def billed_seconds(answer, upload):
    """(seconds, estimated): the upstream's usage seconds or duration, else the WAV header's, else
    the most the file's size allows (MIN_BYTES_PER_SECOND), marked estimated."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if isinstance(usage, dict) and isinstance(usage.get("seconds"), (int, float)):
        return float(usage["seconds"]), False
    if isinstance(answer, dict) and isinstance(answer.get("duration"), (int, float)):
        return float(answer["duration"]), False
    return bound_seconds(upload), True


def bound_seconds(upload):
    """The most seconds an uploaded file can hold (its WAV header's, else by its size)."""
    data = getattr(upload, "data", b"") or b""
    found = wav_seconds(data)
    return math.ceil(found) if found is not None else math.ceil(len(data) / MIN_BYTES_PER_SECOND)
