"""Speech recognition backends: the protocol, and Whisper through faster-whisper (embedded default).

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""
