"""OpenAI's chat completions request and transcription form as this server takes them, as pydantic models:
what the routes validate their bodies against and what `/openapi.json` shows of them. Rules that span
fields (the last message is the user's, audio parts only in user messages, the audio modality needs its
`audio`; a transcription's stream or timestamps need their format) are the routes'."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, Tag

from ...audio import AudioFormat
from ..http.fields import LanguageCode

MAX_MESSAGES = 256
MAX_PROMPT_CHARS = 4096
TranscriptionFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
CHAT_AUDIO_FORMATS: dict[str, AudioFormat] = {
    "wav": "wav",
    "mp3": "mp3",
    "flac": "flac",
    "opus": "opus",
    "pcm16": "pcm16",
}
# The names of the members of the unions below: pydantic puts them in an error's location, validation.py
# leaves them out of the field's name (a space keeps them apart from any field's name).
TEXT_PART, AUDIO_PART, TEXT_CONTENT, PARTS_CONTENT = "text part", "audio part", "text content", "parts content"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputAudio(_Strict):
    data: str = Field(description="base64 of the audio file")
    format: Literal["wav", "mp3"]


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


def _part_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return {"text": TEXT_PART, "input_audio": AUDIO_PART}.get(kind) if isinstance(kind, str) else None


def _content_kind(value: Any) -> str:
    return TEXT_CONTENT if isinstance(value, str) else PARTS_CONTENT


Part = Annotated[Annotated[TextPart, Tag(TEXT_PART)] | Annotated[AudioPart, Tag(AUDIO_PART)], Discriminator(_part_kind)]
Content = Annotated[
    Annotated[str, Tag(TEXT_CONTENT)] | Annotated[list[Part], Field(min_length=1), Tag(PARTS_CONTENT)],
    Discriminator(_content_kind),
]


FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOOLS = 128


class FunctionSpec(_Strict):
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="a JSON schema of its arguments (an object)")
    strict: StrictBool | None = None


class FunctionTool(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class CalledFunction(_Strict):
    name: str
    arguments: str


class CalledTool(_Strict):
    id: str
    type: Literal["function"]
    function: CalledFunction


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content | None = None
    name: str | None = None
    audio: Any = Field(None, description="not kept here: send a previous reply's transcript as its content")
    tool_calls: list[CalledTool] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Strict):
    include_usage: StrictBool | None = None


class VoiceId(_Strict):
    id: str


class AudioOutput(_Strict):
    voice: str | VoiceId = Field(description="default, or a saved voice's id")
    format: Literal["wav", "mp3", "flac", "opus", "pcm16"]


class ChatCompletionRequest(_Strict):
    model: str = Field(description="an id /v1/models lists")
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: Annotated[float, Field(strict=True, ge=0, le=2, allow_inf_nan=False)] | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    conversation_id: str | None = Field(None, description="answer within this stored conversation")
    n: StrictInt | None = None
    user: str | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None


class TranscriptionForm(_Strict):
    """`POST /v1/audio/transcriptions`'s multipart form (its text fields as text; pydantic reads the numbers
    and booleans from them)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    file: bytes = Field(description="the audio file")
    model: str = Field(description="an id /v1/models lists")
    language: LanguageCode | None = Field(None, description="ISO 639-1 code (2 or 3 letters); else detected")
    prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | None = None
    response_format: TranscriptionFormat = "json"
    temperature: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    timestamp_granularities: list[Literal["segment"]] = Field([], alias="timestamp_granularities[]")
    stream: bool = False
