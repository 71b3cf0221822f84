"""fishvoice: a voice-assistant worker. A message in; the reply's text, its speech and the history out."""

__version__ = "0.1.0"
