"""The engine's errors; their messages are written for the caller. The voice backend (tts/fish.py)
turns them into the API's errors, so the engine depends on nothing else of fishvoice."""

from __future__ import annotations


class FishEngineError(Exception):
    """Something the Fish engine could not do."""


class CheckpointError(FishEngineError):
    """A Fish Speech checkpoint is missing a file, or a file does not match what the loader expects
    (raised at load time, naming the file and what was expected)."""


class InvalidRequestError(FishEngineError):
    """A request the engine refuses as it is: sampling settings out of range, a prompt longer than its context."""


class EngineClosedError(FishEngineError):
    """The engine is shut down: it takes no request, and the ones it held end with this."""


class StepFailedError(FishEngineError):
    """A prefill or frame step failed (out of GPU memory, say): the requests in it fail, the engine goes on."""
