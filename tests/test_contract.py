"""Every rule of the request table: one case each, with the code and the field named."""

from __future__ import annotations

import base64

import pytest

from fishvoice.contract import ToolCall, ToolCallDelta, parse_request
from fishvoice.errors import FishvoiceError

OK = {"message": "Hello"}


def refused(raw) -> FishvoiceError:
    with pytest.raises(FishvoiceError) as caught:
        parse_request(raw)
    return caught.value


def test_minimal_request_takes_the_documented_defaults():
    request = parse_request({"message": "  Hello  "})
    assert request.message == "Hello"
    assert (
        request.temperature,
        request.max_tokens,
        request.audio_format,
        request.sample_rate,
        request.speak,
        request.speed,
    ) == (0.7, 512, "array", 44100, True, 1.0)


def test_full_request_is_accepted():
    request = parse_request(
        {
            "message": "Tell me a story",
            "system_message": "Be brief",
            "conversation_id": "story-42:a_b.c",
            "temperature": 1,
            "max_tokens": 4096,
            "audio_format": "opus",
            "sample_rate": 8000,
            "speak": False,
            "system_audio": "UklGRg==",
            "reference_text": "hello",
            "speed": 2,
        }
    )
    assert request.temperature == 1.0 and request.conversation_id == "story-42:a_b.c" and request.speed == 2.0


@pytest.mark.parametrize(
    ("raw", "field", "code", "words"),
    [
        ({}, "message", "invalid_input", "required"),
        ({"message": "   "}, "message", "invalid_input", "empty"),
        ({"message": "x" * 8001}, "message", "invalid_input", "8000"),
        ({"message": 5}, "message", "invalid_input", "string"),
        ({**OK, "system_message": "x" * 8001}, "system_message", "invalid_input", "8000"),
        ({**OK, "system_message": ["a"]}, "system_message", "invalid_input", "string"),
        ({**OK, "max_new_tokens": 5}, "max_new_tokens", "invalid_input", "did you mean max_tokens"),
        ({**OK, "colour": "red"}, "colour", "invalid_input", "unknown field"),
        ({**OK, "temperature": True}, "temperature", "invalid_input", "number"),
        ({**OK, "temperature": "0.5"}, "temperature", "invalid_input", "number"),
        ({**OK, "temperature": 0.05}, "temperature", "invalid_input", "between 0.1 and 1.0"),
        ({**OK, "temperature": 1.5}, "temperature", "invalid_input", "between 0.1 and 1.0"),
        ({**OK, "max_tokens": 1.5}, "max_tokens", "invalid_input", "integer"),
        ({**OK, "max_tokens": True}, "max_tokens", "invalid_input", "integer"),
        ({**OK, "max_tokens": 0}, "max_tokens", "invalid_input", "between 1 and 4096"),
        ({**OK, "max_tokens": 4097}, "max_tokens", "invalid_input", "between 1 and 4096"),
        ({**OK, "conversation_id": ""}, "conversation_id", "invalid_input", "1 to 128"),
        ({**OK, "conversation_id": "a b"}, "conversation_id", "invalid_input", "1 to 128"),
        ({**OK, "conversation_id": "x" * 129}, "conversation_id", "invalid_input", "1 to 128"),
        ({**OK, "audio_format": "ogg"}, "audio_format", "invalid_input", "one of array, wav"),
        ({**OK, "sample_rate": 11025}, "sample_rate", "invalid_input", "one of 8000"),
        ({**OK, "sample_rate": 44100.0}, "sample_rate", "invalid_input", "integer"),
        ({**OK, "speed": 0.2}, "speed", "invalid_input", "between 0.25 and 4.0"),
        ({**OK, "speed": 4.5}, "speed", "invalid_input", "between 0.25 and 4.0"),
        ({**OK, "speed": True}, "speed", "invalid_input", "number"),
        ({**OK, "speed": "2"}, "speed", "invalid_input", "number"),
        ({**OK, "speak": "yes"}, "speak", "invalid_input", "boolean"),
        ({**OK, "speak": 1}, "speak", "invalid_input", "boolean"),
        ({**OK, "reference_text": "hello"}, "reference_text", "invalid_input", "without system_audio"),
        ({**OK, "reference_text": "x" * 2001, "system_audio": "UklGRg=="}, "reference_text", "invalid_input", "2000"),
        ({**OK, "system_audio": 12}, "system_audio", "invalid_input", "string"),
        ({**OK, "system_audio": "  "}, "system_audio", "invalid_audio", "empty"),
        ({**OK, "system_audio": "A" * (21 * 2**20)}, "system_audio", "payload_too_large", "15 MB"),
        ({**OK, "user_audio": "UklGRg=="}, "user_audio", "invalid_input", "message"),
        ({"user_audio": 5}, "user_audio", "invalid_input", "string"),
        ({"user_audio": "  "}, "user_audio", "invalid_audio", "empty"),
        ({"user_audio": "A" * (21 * 2**20)}, "user_audio", "payload_too_large", "15 MB"),
        ({"max_tokens": 5}, "message", "invalid_input", "required"),
        ({**OK, "voice_id": "v1"}, "voice_id", "invalid_input", "unknown field"),
        ({**OK, "reference_id": ""}, "reference_id", "invalid_input", "1 to 128"),
        ({**OK, "reference_id": "a/b"}, "reference_id", "invalid_input", "1 to 128"),
        ({**OK, "reference_id": 5}, "reference_id", "invalid_input", "string"),
        ({**OK, "reference_id": "v1", "system_audio": "UklGRg=="}, "reference_id", "invalid_input", "system_audio"),
        ({**OK, "reference_id": "v1", "reference_text": "hi"}, "reference_id", "invalid_input", "reference_text"),
    ],
)
def test_each_rule_is_refused_with_code_and_field(raw, field, code, words):
    error = refused(raw)
    assert (error.field, error.code) == (field, code)
    assert words in error.message and error.message.startswith(field)


def test_a_saved_voice_is_named_by_reference_id():
    assert parse_request({**OK, "reference_id": "narrator.v2:en"}).reference_id == "narrator.v2:en"


@pytest.mark.parametrize("raw", [None, [], "hello", 3])
def test_input_that_is_not_an_object_is_refused(raw):
    error = refused(raw)
    assert (error.field, error.code) == ("input", "invalid_input")


def test_error_dict_has_the_documented_keys():
    assert refused({**OK, "temperature": 9}).to_dict() == {
        "error": "temperature: must be between 0.1 and 1.0 (got 9.0)",
        "error_code": "invalid_input",
        "field": "temperature",
    }


def test_base64_is_not_decoded_by_the_contract_but_size_is_checked_cheaply():
    big = base64.b64encode(b"\0" * 1000).decode()
    assert parse_request({**OK, "system_audio": big}).system_audio == big


def test_a_calls_pieces_gather_into_the_call_by_index():
    """The first piece names a call, the next add to its arguments; a call the LLM gave no id gets one made."""
    calls: dict[int, ToolCall] = {}
    pieces = [
        ToolCallDelta(0, '{"city": ', "call_a", "weather"),
        ToolCallDelta(1, "{}", None, "time"),
        ToolCallDelta(0, '"Paris"}'),
    ]
    begun = [piece.add_to(calls, lambda: "made") for piece in pieces]
    assert begun == [True, True, False]
    assert calls[0] == {
        "id": "call_a",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
    }
    assert calls[1] == {"id": "made", "type": "function", "function": {"name": "time", "arguments": "{}"}}
