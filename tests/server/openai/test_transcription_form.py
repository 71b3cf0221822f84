"""The transcription form parsed without a model: each bad parameter named as OpenAI names it (the audio's
own code for the file), defaults for what is missing or empty, the rules that span fields."""

from __future__ import annotations

import pytest

from fishvoice.errors import FishvoiceError
from fishvoice.server.openai.transcriptions import FormFields, parse_transcription

MODELS = ("whisper-1",)


def form(**fields: str | bytes | list[str | bytes]) -> FormFields:
    given: FormFields = {"file": [b"RIFF...."], "model": ["whisper-1"]}
    for name, value in fields.items():
        given[name.replace("_granularities", "_granularities[]")] = value if isinstance(value, list) else [value]
    return given


def refused(fields: FormFields) -> FishvoiceError:
    with pytest.raises(FishvoiceError) as caught:
        parse_transcription(fields, MODELS)
    return caught.value


def test_a_plain_form_takes_the_defaults():
    parsed = parse_transcription(form(language="", stream=""), MODELS)
    assert (parsed.file, parsed.model, parsed.language, parsed.prompt) == (b"RIFF....", "whisper-1", None, None)
    assert (parsed.response_format, parsed.stream, parsed.temperature, parsed.timestamp_granularities) == (
        "json",
        False,
        None,
        [],
    )


def test_every_field_is_read_from_its_text():
    parsed = parse_transcription(
        form(
            language="fr",
            prompt="Paris",
            response_format="verbose_json",
            temperature="0.2",
            timestamp_granularities=["segment"],
        ),
        MODELS,
    )
    assert (parsed.language, parsed.prompt, parsed.temperature, parsed.timestamp_granularities) == (
        "fr",
        "Paris",
        0.2,
        ["segment"],
    )
    assert parse_transcription(form(stream="true"), MODELS).stream


@pytest.mark.parametrize(
    ("fields", "code", "field", "says"),
    [
        ({"model": "tts-2"}, "invalid_input", "model", "unknown model 'tts-2'; use one of whisper-1"),
        ({"response_format": "xml"}, "invalid_input", "response_format", "must be one of json, text"),
        ({"language": "English"}, "invalid_input", "language", "ISO 639-1"),
        ({"temperature": "hot"}, "invalid_input", "temperature", "a number"),
        ({"temperature": "1.5"}, "invalid_input", "temperature", "at most 1"),
        ({"prompt": "x" * 5000}, "invalid_input", "prompt", "4096"),
        ({"stream": "maybe"}, "invalid_input", "stream", "boolean"),
        ({"stream": "true", "response_format": "srt"}, "invalid_input", "stream", "not supported"),
        (
            {"timestamp_granularities": ["word"], "response_format": "verbose_json"},
            "invalid_input",
            "timestamp_granularities[]",
            "segment",
        ),
        ({"timestamp_granularities": ["segment"]}, "invalid_input", "timestamp_granularities[]", "verbose_json"),
        ({"beam_size": "5"}, "invalid_input", "beam_size", "unknown parameter"),
        ({"Model": "x"}, "invalid_input", "Model", "unknown parameter"),
        ({"model": ["whisper-1", "whisper-1"]}, "invalid_input", "model", "more than once"),
        ({"prompt": b"a file"}, "invalid_input", "prompt", "text, not a file"),
        ({"file": "text"}, "invalid_audio", "file", "not text"),
        ({"file": []}, "invalid_audio", "file", "required"),
    ],
)
def test_a_bad_parameter_is_named(fields, code, field, says):
    error = refused(form(**fields))
    assert (error.code, error.field) == (code, field) and error.message.startswith(f"{field}: "), error
    assert says in error.message, error.message


def test_the_model_is_required():
    fields = form()
    del fields["model"]
    assert (refused(fields).field, refused(fields).message) == ("model", "model: required")
