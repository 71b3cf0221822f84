"""Our own inference engine for Fish Speech checkpoints (OpenAudio S1-mini, Fish Audio S2-Pro).

Text to semantic codes with a dual autoregressive transformer: a slow transformer over time, a
fast one over the codebooks of each frame. Written from the published checkpoint layouts; it does
not import fishaudio's package. Needs torch (the `fish` extra).
"""
