"""Word timings: known text aligned to the audio it became (see docs/ARCHITECTURE.md).

`words.py` matches the caller's words to spans of speech; `piper.py` reads the spans a Piper voice made
from its own phoneme durations; `reference.py` finds them in any other voice's audio by aligning it to
Piper's rendition of the same text."""
