"""OpenAI's audio and chat APIs: /v1/audio/speech, /v1/audio/voices, /v1/audio/transcriptions,
/v1/chat/completions and /v1/models."""
