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
    # The first chunk ends before "and", a word that opens a phrase; no cut falls after an abbreviation, an
    # initial or inside a number.
    assert chunk_stream(text) == [
        "Dr. Smith met J. R. Tolkien",
        "and paid $3.50 for tea, e.g. green tea.",
        "Then he left.",
    ]


def test_the_first_chunk_ends_at_its_first_clause():
    chunker = SpeechChunker()
    assert chunker.feed("One day,") == []  # the comma may still be inside a number: 1,000
    assert chunker.feed(" a robot") == ["One day,"]


def test_the_first_chunk_is_a_short_phrase_ending_at_a_natural_pause():
    chunker = SpeechChunker()
    assert chunker.feed("The night sky was") == []
    assert chunker.feed(" ablaze") == []  # "was" leads on; "ablaze" may not be whole yet, nor what follows known
    assert chunker.feed(" with hues of crimson and gold.") == ["The night sky was ablaze"]


def test_the_first_chunk_ends_before_a_word_that_opens_a_phrase():
    assert chunk_stream("In the middle of the night when we all heard a sound.")[0] == "In the middle of the night"
    assert chunk_stream("The old man walked slowly along the shore.")[0] == "The old man walked slowly"
    # Never right after a word that leads into the next one ("was", "the"), nor before "of".
    assert chunk_stream("It was the best of all the days for us.")[0] == "It was the best of all the days"


def test_the_first_chunk_waits_for_no_more_than_a_few_words():
    text = "A curious and adventurous little grey cat named Luna wandered far."
    assert chunk_stream(text)[0] == "A curious and adventurous little grey cat named Luna"


def test_the_first_chunk_is_not_cut_inside_a_number_or_after_an_abbreviation():
    assert chunk_stream("It cost about 3 to 4 million in all.")[0] == "It cost about 3 to 4 million"
    assert chunk_stream("We counted 1,000 stars in the sky tonight.")[0] == "We counted 1,000 stars"
    assert chunk_stream("The year was 1999 and the night was cold.") == ["The year was 1999 and the night was cold."]
    assert chunk_stream("I saw them and Prof. and Mrs. Lee at the fair.")[0] == "I saw them and Prof. and Mrs. Lee"
    assert chunk_stream("We spoke with Mr and Mrs Lee at the fair.")[0] == "We spoke with Mr and Mrs Lee"


def test_a_first_sentence_shorter_than_the_rules_goes_out_whole():
    assert chunk_stream("Hi! Let me think about that for a moment.") == ["Hi!", "Let me think about that for a moment."]
    assert chunk_stream("Yes, of course.") == ["Yes, of course."]


def test_the_second_chunk_is_long_enough_to_speak_on_its_own():
    # After a short first chunk the second ends at a natural break twice its length on or more, so it is
    # ready before the first one's speech runs out, and it is never a single word.
    text = "One day, a robot named Kara emerged from the depths of the abandoned planet of Nova Terra. It was cold."
    assert chunk_stream(text) == [
        "One day,",
        "a robot named Kara emerged",
        "from the depths of the abandoned planet of Nova Terra.",
        "It was cold.",
    ]
    assert chunk_stream("The air was crisp and cold. The sun rose over the hills.") == [
        "The air was crisp",
        "and cold. The sun rose over the hills.",  # "and cold." alone would be too short: it goes with the next
    ]


def test_after_a_long_first_chunk_the_second_still_ends_at_a_clause():
    # Twice the first chunk's length would be past `clause_chars`: the second ends at a clause from there on.
    first = "Extraordinarily magnificent architectural masterpieces dominated metropolitan skylines everywhere"
    second = "tall glass towers rose higher every single year reflecting golden sunsets onto busy streets,"
    chunks = chunk_stream(f"{first} {second} crowded markets, quiet parks and green gardens. Done.")
    assert chunks[:2] == [first, second]


def test_after_the_second_chunk_every_chunk_is_a_whole_sentence():
    text = "Once upon a time, a robot lived alone. It loved to paint the sky. Every morning it painted. The end."
    assert chunk_stream(text) == [
        "Once upon a time,",
        "a robot lived alone.",
        "It loved to paint the sky.",
        "Every morning it painted.",
        "The end.",
    ]


def test_text_without_any_boundary_is_cut_between_words():
    text = " ".join(["word"] * 200)
    chunks = chunk_stream(text, max_chars=100)
    assert all(len(c) <= 100 for c in chunks) and " ".join(chunks) == text


def test_nothing_is_lost_whatever_the_delta_size():
    text = "First one. Second, with a clause; and more: yes! Third?  Fourth... done"
    for step in (1, 2, 5, 100):
        assert " ".join(chunk_stream(text, step)).split() == text.split()


def test_flush_returns_the_rest_once_and_nothing_when_empty():
    chunker = SpeechChunker()
    assert chunker.feed("Well then, we shall") == ["Well then,"]
    assert chunker.flush() == ["we shall"]
    assert chunker.flush() == [] and SpeechChunker().flush() == []
    assert chunk_stream("Just three words") == ["Just three words"]


def test_normalize_drops_markdown_and_urls():
    assert normalize_for_speech("**Bold** and `code`, see [the docs](https://x.y/z) or https://a.b/c now.") == (
        "Bold and code, see the docs or now."
    )
    assert not is_speakable(" *** ... ") and is_speakable("42")


def test_control_characters_are_not_read_aloud():
    assert normalize_for_speech("0\x00 a\x07b\x1b[1m c\x7f") == "0 a b [1m c"
    assert normalize_for_speech("line one\nline two\tend") == "line one line two end"
