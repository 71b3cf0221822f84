"""What a realtime client sends, as pydantic models (one per event type), and how a `session.update` or a
`response.create` changes the session's settings.

A session takes the GA shape of `session.update` and the beta's flat one. Fields OpenAI defines that have
no meaning here (tracing, noise reduction...) are accepted and ignored; anything else is refused by
name, as is any bad value (`session.audio.input.turn_detection.threshold: must be at most 1`). Only the
fields a client sends change anything: an update is partial.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, StrictStr, Tag, ValidationError

from ...contract import MAX_MESSAGE_CHARS, Tools
from ...vad import TurnOptions
from ...validation import best_error, field_error
from ..http.fields import LanguageCode, invalid
from .protocol import AudioFormatName, OutOfBand, SessionConfig

MAX_OUTPUT_TOKENS = 4096

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Instructions = Annotated[StrictStr, Field(max_length=MAX_MESSAGE_CHARS)]
Voice = Annotated[StrictStr, Field(min_length=1, description="default, or a saved voice's id")]
Modalities = Annotated[list[Literal["text", "audio"]], Field(min_length=1, description='["audio"] or ["text"]')]
MaxTokens = Annotated[StrictInt, Field(ge=1, le=MAX_OUTPUT_TOKENS)] | Literal["inf"]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Ignoring(_Event):
    """An object of OpenAI's whose fields without meaning here are taken and ignored."""

    type: Any = None
    model: Any = None
    object: Any = None
    id: Any = None
    tracing: Any = None
    include: Any = None
    prompt: Any = None
    truncation: Any = None
    reasoning: Any = None
    metadata: Any = None


class Function(_Event):
    """A function the model may call, as the realtime API lists it (flat, unlike the chat API's)."""

    type: Literal["function"]
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = Field(None, description="a JSON schema of its arguments (an object)")


class NamedFunction(_Event):
    type: Literal["function"]
    name: StrictStr


FunctionList = Annotated[list[Function], Field(max_length=128)]
ToolChoice = Literal["auto", "none", "required"] | NamedFunction


class FormatObject(_Event):
    """pcm16 at 24 kHz, or telephone audio: G.711 mu-law or A-law at 8 kHz (the beta names them "pcm16",
    "g711_ulaw", "g711_alaw")."""

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: Literal[24000] | None = None  # audio/pcm's, REALTIME_RATE


AudioFormat = FormatObject | Literal["pcm16", "g711_ulaw", "g711_alaw"]
_FORMATS: dict[str, AudioFormatName] = {
    "pcm16": "pcm",
    "g711_ulaw": "pcmu",
    "g711_alaw": "pcma",
    "audio/pcm": "pcm",
    "audio/pcmu": "pcmu",
    "audio/pcma": "pcma",
}


def _format_name(given: AudioFormat) -> AudioFormatName:
    return _FORMATS[given if isinstance(given, str) else given.type]


class TurnDetection(_Event):
    """server_vad, or semantic_vad (its `eagerness`: auto is medium); the VAD's own settings apply to both."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    threshold: Annotated[Number, Field(ge=0, le=1)] | None = None
    prefix_padding_ms: Annotated[StrictInt, Field(ge=0, le=5000)] | None = None
    silence_duration_ms: Annotated[StrictInt, Field(ge=100, le=10000)] | None = None
    create_response: StrictBool | None = None
    interrupt_response: StrictBool | None = None
    idle_timeout_ms: Annotated[StrictInt, Field(ge=5000, le=30000)] | None = None


class Transcription(_Event):
    """The language of the user's speech (its detection skipped); the model is the server's."""

    model: Any = None
    prompt: Any = None
    language: LanguageCode | None = None


class AudioInput(_Event):
    format: AudioFormat | None = None
    turn_detection: TurnDetection | None = None
    transcription: Transcription | None = None
    noise_reduction: Any = None


class AudioOutput(_Event):
    format: AudioFormat | None = None
    voice: Voice | None = None
    speed: Annotated[Number, Field(ge=0.25, le=1.5)] | None = None


class SessionAudio(_Event):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class Session(_Ignoring):
    """`session.update`'s session: the GA fields, and the beta's flat ones beside them; `type: "transcription"`
    makes a transcription session (turns heard, none answered)."""

    type: Literal["realtime", "transcription"] | None = None

    instructions: Instructions | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    max_output_tokens: MaxTokens | None = None
    output_modalities: Modalities | None = None
    audio: SessionAudio | None = None
    tools: FunctionList | None = None
    tool_choice: ToolChoice | None = None
    # the beta's
    max_response_output_tokens: MaxTokens | None = None
    modalities: Modalities | None = None
    voice: Voice | None = None
    input_audio_format: AudioFormat | None = None
    output_audio_format: AudioFormat | None = None
    turn_detection: TurnDetection | None = None
    input_audio_transcription: Transcription | None = None
    # fishvoice's: each spoken chunk's words' timings, as `response.output_audio.words` events
    word_timestamps: StrictBool | None = None


class ResponseAudioOutput(_Event):
    voice: Voice | None = None
    format: AudioFormat | None = None


class ResponseAudio(_Event):
    output: ResponseAudioOutput | None = None


class InputText(_Event):
    type: Literal["input_text", "text"]
    text: StrictStr


class UserMessage(_Event):
    type: Literal["message"] = "message"
    role: Literal["user"] = Field(description="only user messages can be added")
    content: Annotated[list[InputText], Field(min_length=1)]
    id: StrictStr | None = None
    object: Any = None
    status: Any = None


class FunctionOutput(_Event):
    """A called function's result, which the client adds for the model to answer from."""

    type: Literal["function_call_output"]
    call_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    output: Annotated[StrictStr, Field(max_length=MAX_MESSAGE_CHARS)]
    id: StrictStr | None = None
    object: Any = None
    status: Any = None


# The union's members by names with a space, which validation.py leaves out of a field's name.
USER_MESSAGE, FUNCTION_OUTPUT = "user message", "function output"


def _item_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else None
    return FUNCTION_OUTPUT if kind == "function_call_output" else USER_MESSAGE


Item = Annotated[
    Annotated[UserMessage, Tag(USER_MESSAGE)] | Annotated[FunctionOutput, Tag(FUNCTION_OUTPUT)],
    Discriminator(_item_kind),
]


Metadata = Annotated[
    dict[Annotated[StrictStr, Field(max_length=64)], Annotated[StrictStr, Field(max_length=512)]],
    Field(max_length=16, description="up to 16 pairs, returned on the response"),
]


class ResponseParams(_Ignoring):
    """`response.create`'s response: settings for that reply only; `conversation: "none"` answers outside the
    conversation (its `input` items, else what the user said since the last reply) and keeps nothing."""

    instructions: Instructions | None = None
    output_modalities: Modalities | None = None
    modalities: Modalities | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    audio: ResponseAudio | None = None
    conversation: Literal["auto", "none"] = Field("auto", description="the session's conversation, or none")
    input: Annotated[list[UserMessage], Field(min_length=1, max_length=32)] | None = None
    metadata: Metadata | None = None
    tools: FunctionList | None = None
    tool_choice: ToolChoice | None = None


class ClientEvent(_Event):
    type: str
    event_id: StrictStr | None = None


class SessionUpdate(ClientEvent):
    type: Literal["session.update"]
    session: Session


class AudioAppend(ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: StrictStr = Field(description="base64 of pcm16 at 24 kHz")


class AudioCommit(ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(ClientEvent):
    type: Literal["conversation.item.create"]
    item: Item
    previous_item_id: StrictStr | None = None


class ItemTruncate(ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: StrictStr
    content_index: Literal[0] = 0
    audio_end_ms: Annotated[StrictInt, Field(ge=0)]


class ItemRetrieve(ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: StrictStr


class ItemDelete(ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: StrictStr


class ResponseCreate(ClientEvent):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(ClientEvent):
    type: Literal["response.cancel"]
    response_id: StrictStr | None = None


CLIENT_EVENTS: dict[str, type[ClientEvent]] = {
    "session.update": SessionUpdate,
    "input_audio_buffer.append": AudioAppend,
    "input_audio_buffer.commit": AudioCommit,
    "input_audio_buffer.clear": AudioClear,
    "conversation.item.create": ItemCreate,
    "conversation.item.truncate": ItemTruncate,
    "conversation.item.retrieve": ItemRetrieve,
    "conversation.item.delete": ItemDelete,
    "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
}


def parse_event(event: dict[str, Any]) -> ClientEvent:
    """The client's event as its model; a bad one is an `invalid_input` naming the field at fault."""
    kind = event.get("type")
    model = CLIENT_EVENTS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise invalid("type", f"unknown or unsupported event type {str(kind)[:60]!r}")
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        raise field_error(
            best_error(exc.errors()), model, whole=str(kind), unknown="unknown parameter", brackets=True
        ) from None


def updated(config: SessionConfig, session: Session) -> SessionConfig:
    """`config` with a `session.update`'s fields applied (those sent, and only those)."""
    config = _replies(config, session)
    if session.type is not None:
        config = replace(config, kind=session.type)
    if session.max_response_output_tokens is not None:
        config = replace(config, max_output_tokens=_tokens(session.max_response_output_tokens))
    if session.voice is not None:
        config = replace(config, voice=session.voice)
    if "turn_detection" in session.model_fields_set:
        config = _detection(config, session.turn_detection)
    if session.input_audio_transcription is not None:
        config = _transcription(config, session.input_audio_transcription)
    if session.word_timestamps is not None:
        config = replace(config, word_timestamps=session.word_timestamps)
    config = _formats(config, session.input_audio_format, session.output_audio_format)
    if (audio := session.audio) is not None:
        if audio.input is not None and "turn_detection" in audio.input.model_fields_set:
            config = _detection(config, audio.input.turn_detection)
        if audio.input is not None and audio.input.transcription is not None:
            config = _transcription(config, audio.input.transcription)
        if audio.output is not None and audio.output.voice is not None:
            config = replace(config, voice=audio.output.voice)
        if audio.output is not None and audio.output.speed is not None:
            config = replace(config, speed=audio.output.speed)
        given_in = audio.input.format if audio.input is not None else None
        config = _formats(config, given_in, audio.output.format if audio.output is not None else None)
    return config


def _formats(config: SessionConfig, given_in: AudioFormat | None, given_out: AudioFormat | None) -> SessionConfig:
    """The audio formats in and out, those given."""
    if given_in is not None:
        config = replace(config, input_format=_format_name(given_in))
    if given_out is not None:
        config = replace(config, output_format=_format_name(given_out))
    return config


def for_response(config: SessionConfig, response: ResponseParams | None) -> SessionConfig:
    """The session's settings with a `response.create`'s own applied, for that reply only."""
    if response is None:
        return config
    if response.input is not None and response.conversation != "none":
        why = 'only with conversation: "none"; add to the conversation with conversation.item.create'
        raise invalid("response.input", why)
    config = _replies(config, response)
    if response.audio is not None and response.audio.output is not None and response.audio.output.voice:
        config = replace(config, voice=response.audio.output.voice)
    return config


def out_of_band(response: ResponseParams | None) -> OutOfBand | None:
    """What a `response.create` asks beyond settings (None: nothing)."""
    if response is None:
        return None
    message = " ".join(user_text(item) for item in response.input) if response.input else None
    return OutOfBand(response.metadata, response.conversation == "none", message)


def user_text(item: UserMessage) -> str:
    """The text of a user message the client adds: its parts joined."""
    text = " ".join(part.text for part in item.content).strip()
    if not text:
        raise invalid("item.content", "the message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise invalid("item.content", f"must be at most {MAX_MESSAGE_CHARS} characters (got {len(text)})")
    return text


def _replies(config: SessionConfig, given: Session | ResponseParams) -> SessionConfig:
    """What a session and a response both set: instructions, temperature, length and modalities."""
    if given.instructions is not None:
        config = replace(config, instructions=given.instructions.strip() or None)
    if given.temperature is not None:
        config = replace(config, temperature=given.temperature)
    if given.max_output_tokens is not None:
        config = replace(config, max_output_tokens=_tokens(given.max_output_tokens))
    for modalities in (given.output_modalities, given.modalities):
        if modalities is not None:
            config = replace(config, audio="audio" in modalities)
    if given.tools is not None or given.tool_choice is not None:
        config = replace(config, tools=_tools(config.tools, given.tools, given.tool_choice))
    return config


def _tools(now: Tools, functions: list[Function] | None, choice: ToolChoice | None) -> Tools:
    """The functions offered and the choice, those given changed; a named choice must name one of them."""
    listed = now.functions
    if functions is not None:
        names = [f.name for f in functions]
        if len(set(names)) < len(names):
            raise invalid("tools", "each function needs a name of its own")
        listed = tuple(
            {"type": "function", "function": f.model_dump(exclude={"type"}, exclude_none=True)} for f in functions
        )
    named = now.choice if choice is None else choice.name if isinstance(choice, NamedFunction) else choice
    tools = Tools(listed, named)
    if named not in ("auto", "none", "required") and tools.named(named) is None:
        raise invalid("tool_choice.name", f"no function {named[:64]!r} in tools")
    if named == "required" and not listed:
        raise invalid("tool_choice", "a function can be required only with tools")
    return tools


def _tokens(value: int | str) -> int:
    return MAX_OUTPUT_TOKENS if value == "inf" else int(value)


def _detection(config: SessionConfig, detection: TurnDetection | None) -> SessionConfig:
    """Server VAD's settings changed (those sent), or turned off (null: push-to-talk)."""
    if detection is None:
        return replace(config, turns=None)
    turns = config.turns or TurnOptions()
    if "type" in detection.model_fields_set or detection.eagerness is not None:  # the mode, else as it was
        typed = "type" in detection.model_fields_set
        semantic = detection.type == "semantic_vad" if typed else turns.eagerness is not None
        given = detection.eagerness if detection.eagerness != "auto" else "medium"
        turns = replace(turns, eagerness=(given or turns.eagerness or "medium") if semantic else None)
    if detection.threshold is not None:
        turns = replace(turns, threshold=detection.threshold)
    if detection.prefix_padding_ms is not None:
        turns = replace(turns, prefix_ms=detection.prefix_padding_ms)
    if detection.silence_duration_ms is not None:
        turns = replace(turns, silence_ms=detection.silence_duration_ms)
    if "idle_timeout_ms" in detection.model_fields_set:
        turns = replace(turns, idle_ms=detection.idle_timeout_ms)
    if turns.idle_ms is not None and turns.eagerness is not None:
        raise invalid("turn_detection.idle_timeout_ms", "is server_vad's; semantic_vad waits as long as it needs")
    config = replace(config, turns=turns)
    if detection.create_response is not None:
        config = replace(config, create_response=detection.create_response)
    if detection.interrupt_response is not None:
        config = replace(config, interrupt_response=detection.interrupt_response)
    return config


def _transcription(config: SessionConfig, transcription: Transcription) -> SessionConfig:
    return replace(config, language=transcription.language)
