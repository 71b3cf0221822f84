"""Our own inference engine for Fish Speech checkpoints (OpenAudio S1-mini, Fish Audio S2-Pro).

Text to semantic codes with a dual autoregressive transformer: a slow transformer over time, a
fast one over the codebooks of each frame. Written from the published checkpoint layouts; it does
not import fishaudio's package. Needs torch (the `fish` extra).

What the rest of fishvoice uses: engine.FishEngine, checkpoints.locate_checkpoint, sampling.Sampling
and the errors in errors.py; the other modules are internal. The engine imports nothing else of
fishvoice: its errors are its own, and the voice backend (tts/fish.py) maps them to the API's.
"""
