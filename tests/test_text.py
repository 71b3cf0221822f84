"""The chunker turns a token stream into speakable sentences and clauses."""

from __future__ import annotations

from fishvoice.text import SpeechChunker, is_speakable, normalize_for_speech


def chunk_stream(text: str, step: int = 3, **options) -> list[str]:
    chunker = SpeechChunker(**options)
    chunks = []
    for start in range(0, len(text), step):
        chunks += chunker.feed(text[start : start + step])
    return chunks + chunker.flush()


def test_sentences_are_emitted_as_soon_as_they_end():
    chunker = SpeechChunker()
    assert chunker.feed("Hello there! How are") == ["Hello there!"]
    assert chunker.feed(" you today? I am") == ["How are you today?"]
    assert chunker.flush() == ["I am"]


def test_abbreviations_initials_and_decimals_do_not_split():
    text = "Dr. Smith met J. R. Tolkien and paid $3.50 for tea, e.g. green tea. Then he left."
    # The first chunk may end at a clause (early first audio); no cut falls inside the sentence otherwise.
    assert chunk_stream(text) == [
        "Dr. Smith met J. R. Tolkien and paid $3.50 for tea,",
        "e.g. green tea.",
        "Then he left.",
    ]


def test_long_sentences_split_at_clauses_and_the_first_chunk_early():
    text = (
        "Once upon a time, in a land far away, there lived a robot who loved to paint the sky every morning, "
        "and every evening it painted the sea in colours nobody had ever seen before, which made people happy."
    )
    chunks = chunk_stream(text)
    assert chunks[0] == "Once upon a time,"
    assert len(chunks) >= 3 and " ".join(chunks) == text


def test_text_without_any_boundary_is_cut_between_words():
    text = " ".join(["word"] * 200)
    chunks = chunk_stream(text, max_chars=100)
    assert all(len(c) <= 100 for c in chunks) and " ".join(chunks) == text


def test_nothing_is_lost_whatever_the_delta_size():
    text = "First one. Second, with a clause; and more: yes! Third?  Fourth... done"
    for step in (1, 2, 5, 100):
        assert " ".join(chunk_stream(text, step)).split() == text.split()


def test_normalize_drops_markdown_and_urls():
    assert normalize_for_speech("**Bold** and `code`, see [the docs](https://x.y/z) or https://a.b/c now.") == (
        "Bold and code, see the docs or now."
    )
    assert not is_speakable(" *** ... ") and is_speakable("42")
