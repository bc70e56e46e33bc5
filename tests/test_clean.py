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


def test_trim_to_sentence():
    from streamsynth.methods.attributed import trim_to_sentence

    assert trim_to_sentence("A fine film. The cast is great and the") == "A fine film."
    assert trim_to_sentence('He said "wow!" and then the credits') == 'He said "wow!"'
    assert trim_to_sentence("no sentence end at all and") == ""


def test_parse_pair_reads_labeled_lines():
    from streamsynth.methods.attributed import parse_pair

    fields = ("premise", "hypothesis")
    text = "Sure!\nPremise: A man rides a bike .\nHypothesis: A person is outside.\nLabel: entailment"
    assert parse_pair(text, fields) == {"premise": "A man rides a bike .", "hypothesis": "A person is outside."}
    assert parse_pair("**Premise:** Two dogs run.\n**Hypothesis:** Animals move.", fields) == {
        "premise": "Two dogs run.", "hypothesis": "Animals move."}
    assert parse_pair("Premise: only one line", fields) is None


def test_fit_sentences_keeps_whole_sentences_within_the_limit():
    from streamsynth.methods.attributed import fit_sentences

    text = "A fine film. The cast is great. " + "And then it goes on and on" * 10 + "."
    assert fit_sentences(text, 40) == "A fine film. The cast is great."
    assert fit_sentences(text, 12) == "A fine film."
    assert fit_sentences(text, 5) == ""
