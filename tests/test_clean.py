import pytest

from streamsynth.quality.clean import clean_text, normalize_for_dedup, strip_label_tag

LABELS = ("negative", "positive")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('Here is a positive review sentence: "The acting is superb."', "The acting is superb."),
        ("Sure! Here's a negative movie review:\n\nThe plot drags on forever.", "The plot drags on forever."),
        ("Review: a charming, funny little film.", "a charming, funny little film."),
        ("“A quiet triumph of a movie.”", "A quiet triumph of a movie."),
        ("1. The soundtrack soars.", "The soundtrack soars."),
        ("**Sentence:** The pacing is slow.", "The pacing is slow."),
        ("The pacing is slow. (negative)", "The pacing is slow."),
        ("The pacing is slow.\nSentiment: negative", "The pacing is slow."),
        ("The cast shines.\n\nThis review is positive because it praises the cast.", "The cast shines."),
        ('{"input": "A dull film.", "output": "negative"}', "A dull film."),
        ("it 's a fine , focused piece of work .", "it 's a fine , focused piece of work ."),
        ("'tis a film that won't quit", "'tis a film that won't quit"),
        ('"An unfinished quote', "An unfinished quote"),
    ],
)
def test_clean_text_cuts_wrappers(raw, expected):
    assert clean_text(raw, labels=LABELS).text == expected


def test_clean_text_keeps_plain_text_and_records_notes():
    c = clean_text("Here is one: A bold debut.")
    assert c.text == "A bold debut." and "preamble" in c.notes


def test_clean_text_on_empty_and_whitespace():
    assert clean_text("").text == ""
    assert clean_text("   \n ").text == ""


def test_strip_label_tag_only_at_the_end():
    assert strip_label_tag("positive vibes all around - positive", LABELS) == "positive vibes all around"
    assert strip_label_tag("a positive surprise", LABELS) == "a positive surprise"


def test_normalize_for_dedup():
    assert normalize_for_dedup("The FILM, is great!!") == normalize_for_dedup("the film is great")
