"""Audio: POST /v1/audio/transcriptions and /v1/audio/translations (a multipart/form-data upload,
parsed with limits by gateway/wire/multipart.py; billed per second of audio) and POST
/v1/audio/speech (the audio streamed back as it comes; billed per character), also without /v1 and
on Azure's deployment paths."""

from flask import Blueprint

from gateway.api.pipeline import serve

bp = Blueprint("audio", __name__)


@bp.post("/v1/audio/transcriptions")
@bp.post("/audio/transcriptions")
def transcriptions():
    """Speech to text in the audio's language (Whisper and compatible servers)."""
    return serve("transcriptions")


@bp.post("/v1/audio/translations")
@bp.post("/audio/translations")
def translations():
    """Speech to English text."""
    return serve("translations")


@bp.post("/v1/audio/speech")
@bp.post("/audio/speech")
def speech():
    """Text to speech, streamed."""
    return serve("speech")


@bp.post("/openai/deployments/<path:model>/audio/transcriptions")
def transcriptions_for(model):
    """Transcriptions with the model named in the path (Azure clients)."""
    return serve("transcriptions", model)


@bp.post("/openai/deployments/<path:model>/audio/translations")
def translations_for(model):
    """Translations with the model named in the path (Azure clients)."""
    return serve("translations", model)


@bp.post("/openai/deployments/<path:model>/audio/speech")
def speech_for(model):
    """Speech with the model named in the path (Azure clients)."""
    return serve("speech", model)
