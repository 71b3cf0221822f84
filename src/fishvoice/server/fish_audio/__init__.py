"""Fish Audio's API: /v1/tts and saved voices (/v1/references/*)."""
