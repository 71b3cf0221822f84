"""OpenAI's Realtime API at /v1/realtime: the session over a WebSocket, and its protocol's events."""
