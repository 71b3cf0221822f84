"""A realtime client's events parsed, and what a `session.update` or a `response.create` changes: each bad
field refused by its path, fields OpenAI defines without meaning here taken and ignored, an update partial."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fishvoice.audio import G711_RATE
from fishvoice.errors import FishvoiceError
from fishvoice.server.realtime.client_events import (
    CLIENT_EVENTS,
    ItemCreate,
    ResponseCreate,
    ResponseParams,
    SessionUpdate,
    for_response,
    out_of_band,
    parse_event,
    updated,
    user_text,
)
from fishvoice.server.realtime.protocol import OutOfBand, ResponseSummary, SessionConfig
from fishvoice.server.realtime.reply import Reply
from fishvoice.server.realtime.responses import reply_request
from fishvoice.server.realtime.session import RealtimeSession
from fishvoice.vad import TurnOptions


def refused(event: dict[str, Any]) -> tuple[str | None, str]:
    with pytest.raises(FishvoiceError) as caught:
        parse_event(event)
    assert caught.value.code == "invalid_input"
    return caught.value.field, caught.value.message


def session_update(session: dict[str, Any], config: SessionConfig | None = None) -> SessionConfig:
    event = parse_event({"type": "session.update", "session": session})
    assert isinstance(event, SessionUpdate)
    return updated(config or SessionConfig(), event.session)


HELLO = {"type": "text", "text": "hi"}


@pytest.mark.parametrize(
    ("event", "field", "says"),
    [
        ({"type": "no.such.event"}, "type", "unknown or unsupported event type 'no.such.event'"),
        ({"type": 7}, "type", "unknown or unsupported"),
        (
            {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": 5}}}}},
            "session.audio.input.turn_detection.threshold",
            "at most 1",
        ),
        ({"type": "session.update", "session": {"colour": "blue"}}, "session.colour", "unknown parameter"),
        ({"type": "session.update", "session": "loud"}, "session", "must be an object"),
        ({"type": "session.update"}, "session", "required"),
        ({"type": "session.update", "session": {"temperature": True}}, "session.temperature", "a number"),
        ({"type": "session.update", "session": {"temperature": "0.5"}}, "session.temperature", "a number"),
        ({"type": "session.update", "session": {"max_output_tokens": 0}}, "session.max_output_tokens", "at least 1"),
        ({"type": "session.update", "session": {"modalities": ["video"]}}, "session.modalities[0]", "audio"),
        ({"type": "session.update", "session": {"output_modalities": []}}, "session.output_modalities", "at least"),
        (
            {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/opus"}}}}},
            "session.audio.input.format.type",
            "audio/pcmu",
        ),
        (
            {"type": "session.update", "session": {"audio": {"output": {"speed": 1.6}}}},
            "session.audio.output.speed",
            "at most 1.5",
        ),
        (
            {"type": "session.update", "session": {"input_audio_transcription": {"language": "english"}}},
            "session.input_audio_transcription.language",
            "ISO 639-1",
        ),
        (
            {"type": "session.update", "session": {"turn_detection": {"type": "far_field_vad"}}},
            "session.turn_detection.type",
            "semantic_vad",
        ),
        (
            {"type": "session.update", "session": {"turn_detection": {"type": "semantic_vad", "eagerness": "max"}}},
            "session.turn_detection.eagerness",
            "high",
        ),
        ({"type": "response.create", "response": {"conversation": "other"}}, "response.conversation", "auto, none"),
        (
            {"type": "response.create", "response": {"metadata": {f"k{n}": "v" for n in range(17)}}},
            "response.metadata",
            "16",
        ),
        (
            {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": []}},
            "item.content",
            "at least 1",
        ),
        (
            {"type": "conversation.item.create", "item": {"role": "assistant", "content": [{"type": "input_text"}]}},
            "item.role",
            "user",
        ),
        (
            {"type": "conversation.item.create", "item": {"role": "user", "content": [{"type": "input_audio"}]}},
            "item.content[0].type",
            "input_text",
        ),
        ({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": -1}, "audio_end_ms", "at least 0"),
        ({"type": "conversation.item.truncate", "item_id": "x"}, "audio_end_ms", "required"),
        ({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": 1.5}, "audio_end_ms", "integer"),
        ({"type": "input_audio_buffer.append"}, "audio", "required"),
        ({"type": "conversation.item.retrieve"}, "item_id", "required"),
        ({"type": "conversation.item.delete", "item_id": 5}, "item_id", "a string"),
        ({"type": "input_audio_buffer.commit", "event_id": 5}, "event_id", "a string"),
    ],
)
def test_a_bad_event_is_refused_by_the_field_at_fault(event, field, says):
    refused_field, message = refused(event)
    assert refused_field == field and message.startswith(f"{field}: ") and says in message, message


def test_a_responses_own_input_is_only_for_one_outside_the_conversation():
    asked = parse_event({"type": "response.create", "response": {"input": [{"role": "user", "content": [HELLO]}]}})
    assert isinstance(asked, ResponseCreate)
    with pytest.raises(FishvoiceError) as caught:
        for_response(SessionConfig(), asked.response)
    assert caught.value.field == "response.input" and 'conversation: "none"' in caught.value.message
    alone = asked.response.model_copy(update={"conversation": "none"})
    assert for_response(SessionConfig(), alone) == SessionConfig()
    assert out_of_band(alone) == OutOfBand(None, True, "hi")


def test_the_ga_session_shape_sets_every_setting():
    config = session_update(
        {
            "type": "realtime",
            "model": "gpt-realtime",
            "tools": [],
            "tracing": "auto",
            "instructions": "  Be brief.  ",
            "output_modalities": ["text"],
            "max_output_tokens": "inf",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "noise_reduction": None,
                    "transcription": {"model": "whisper-1", "language": "fr"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 300, "create_response": False},
                },
                "output": {"format": {"type": "audio/pcm"}, "voice": "mine", "speed": 1.0},
            },
        }
    )
    assert config.instructions == "Be brief." and not config.audio and config.max_output_tokens == 4096
    assert config.voice == "mine" and config.language == "fr" and not config.create_response
    assert config.turns == TurnOptions(silence_ms=300)


def test_the_beta_flat_shape_sets_the_same():
    config = session_update(
        {
            "modalities": ["text", "audio"],
            "voice": "mine",
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "max_response_output_tokens": 99,
            "turn_detection": {"threshold": 0.7, "prefix_padding_ms": 200},
            "input_audio_transcription": {"model": "whisper-1"},
        }
    )
    assert config.audio and config.voice == "mine" and config.max_output_tokens == 99 and config.language is None
    assert config.turns == TurnOptions(threshold=0.7, prefix_ms=200)


def test_an_update_changes_only_what_it_sends():
    before = session_update({"instructions": "Be brief.", "temperature": 0.2, "audio": {"output": {"voice": "v"}}})
    after = session_update({"audio": {"input": {"turn_detection": {"silence_duration_ms": 900}}}}, before)
    assert (after.instructions, after.temperature, after.voice) == ("Be brief.", 0.2, "v")
    assert after.turns == TurnOptions(silence_ms=900)
    assert session_update({"turn_detection": None}, after).turns is None  # push-to-talk
    back = session_update({"audio": {"input": {"turn_detection": {}}}}, session_update({"turn_detection": None}))
    assert back.turns == TurnOptions()  # server VAD on again, at its defaults


def test_a_response_overrides_the_session_for_itself_only():
    session = SessionConfig(instructions="Be brief.", voice="v")
    event = parse_event(
        {
            "type": "response.create",
            "response": {
                "instructions": "Shout.",
                "output_modalities": ["text"],
                "temperature": 1,
                "metadata": {"topic": "x"},
                "audio": {"output": {"voice": "w"}},
            },
        }
    )
    assert isinstance(event, ResponseCreate)
    reply = for_response(session, event.response)
    assert (reply.instructions, reply.audio, reply.temperature, reply.voice) == ("Shout.", False, 1.0, "w")
    assert session.instructions == "Be brief." and for_response(session, None) == session
    assert refused({"type": "response.create", "response": {"input": []}})[0] == "response.input"


def test_tools_are_the_sessions_and_a_response_may_change_them_for_itself():
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    config = session_update({"tools": [weather], "tool_choice": {"type": "function", "name": "get_weather"}})
    assert config.tools.functions == (
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    )
    shown = config.to_dict("sess")
    assert shown["tools"] == [weather] and shown["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert session_update({"tool_choice": "auto"}, config).tools.functions == config.tools.functions  # partial
    quiet = for_response(config, ResponseParams(tool_choice="none"))
    assert not quiet.tools.offered and config.tools.offered
    other = for_response(
        config, ResponseParams(tools=[{"type": "function", "name": "get_time"}], tool_choice="required")
    )
    assert [f["function"]["name"] for f in other.tools.functions] == ["get_time"] and other.tools.choice == "required"
    with pytest.raises(FishvoiceError) as refused:  # the session's named choice is not among the response's tools
        for_response(config, ResponseParams(tools=[{"type": "function", "name": "get_time"}]))
    assert refused.value.field == "tool_choice.name"


def test_a_user_message_is_its_parts_joined_within_the_limit():
    def item(*texts: str) -> ItemCreate:
        content = [{"type": "input_text", "text": text} for text in texts]
        event = parse_event({"type": "conversation.item.create", "item": {"role": "user", "content": content}})
        assert isinstance(event, ItemCreate)
        return event

    assert user_text(item("Hello", "there ").item) == "Hello there"
    for bad in (item("  "), item("x" * 100_000)):
        with pytest.raises(FishvoiceError) as caught:
            user_text(bad.item)
        assert caught.value.field == "item.content"


def test_every_event_a_client_may_send_has_a_handler():
    handlers = RealtimeSession.handlers(object.__new__(RealtimeSession))
    assert set(handlers) == set(CLIENT_EVENTS)


def test_phone_formats_and_speed_are_the_sessions_and_each_reply_speaks_at_it():
    config = session_update({"audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"speed": 1.25}}})
    assert (config.input_format, config.output_format, config.speed) == ("pcmu", "pcm", 1.25)
    config = session_update({"input_audio_format": "g711_alaw", "output_audio_format": "g711_ulaw"}, config)
    assert (config.input_format, config.output_format, config.speed) == ("pcma", "pcmu", 1.25)
    shown = config.to_dict("sess")["audio"]
    assert shown["input"]["format"] == {"type": "audio/pcma"} and shown["output"]["speed"] == 1.25
    asked = reply_request(Reply(ResponseSummary("resp", "item", True), "Hi.", config))
    assert (asked.speed, asked.sample_rate) == (1.25, G711_RATE)


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 40000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["audio/pcm", "audio/pcmu", "audio/pcma", "g711_ulaw", "pcm16", "semantic_vad", "server_vad"]),
    st.sampled_from(["low", "medium", "high", "auto", "none", "auto ", "transcription", "realtime"]),
    st.sampled_from(["function", "function_call_output", "required", "get_weather", "object", "message"]),
)
_shapes = st.recursive(
    _values,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "format",
                    "rate",
                    "eagerness",
                    "idle_timeout_ms",
                    "speed",
                    "conversation",
                    "input",
                    "metadata",
                    "role",
                    "content",
                    "text",
                    "turn_detection",
                    "audio",
                    "input",
                    "output",
                    "tools",
                    "tool_choice",
                    "name",
                    "parameters",
                    "call_id",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(session=_shapes, response=_shapes, item=_shapes)
def test_the_new_session_and_response_fields_refuse_any_bad_shape_by_name(session, response, item):
    """Formats, semantic VAD, idle timeouts, speed, session types, tools, out-of-band responses with their input
    and metadata, function outputs: any shape is taken or refused as invalid_input naming a field, never
    anything else."""
    for event in (
        {"type": "session.update", "session": session},
        {"type": "response.create", "response": response},
        {"type": "conversation.item.create", "item": item},
    ):
        try:
            parsed = parse_event(event)
            if isinstance(parsed, SessionUpdate):
                updated(SessionConfig(), parsed.session).to_dict("sess")
            elif isinstance(parsed, ResponseCreate):
                for_response(SessionConfig(), parsed.response)
                out_of_band(parsed.response)
        except FishvoiceError as error:
            assert error.code == "invalid_input" and error.field and error.message.startswith(error.field)
