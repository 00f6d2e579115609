"""Text normalisation, independent support of transcripts and the hallucination rules, on
controlled text."""
import pytest

from operators.hallucination import check, max_ngram_run
from operators.transcripts import normalise, speaking_rate, support, symmetric_error
from schemas import reasons
from schemas.config import HallucinationConfig


@pytest.mark.parametrize("a, b", [
    ("Four of clubs.", "4 of clubs"),                      # numbers in one form
    ("He was not an ill-disposed young man.", "he was not an ill disposed young man"),
    ("ＨＥＬＬＯ，　World!", "hello world"),                  # NFKC full-width forms, punctuation
    ("Café   au  lait", "cafe\u0301 au lait"),             # composed vs decomposed accents
    ("Straße", "STRASSE"),                                 # case folding beyond lower()
    ("ten  of\tclubs", "10 of clubs"),
    ("And Mr. John Dashwood", "and mister john dashwood"),  # a title as the reader says it
    ("Mrs Jennings and Dr. Smith", "missus jennings and doctor smith"),
])
def test_normalisation_makes_equal_things_equal(a, b):
    assert normalise(a) == normalise(b)


def test_normalisation_keeps_different_things_different():
    assert normalise("four of clubs") != normalise("five of clubs")
    assert normalise("Main St.") == "main st"                 # saint or street: left alone
    assert normalise("Mr", "de") == "mr"                     # English titles only in English
    assert normalise("") == "" and normalise(None) == ""


def test_no_space_languages_compare_by_characters():
    a = normalise("今天天气很好。", "zh", no_space=True)
    b = normalise("今天 天气 很好", "zh", no_space=True)
    assert a == b == "今天天气很好"
    result = support([a, normalise("今天天气不好", "zh", no_space=True)], ["whisper", "other"],
                     no_space=True, max_error=0.4)
    assert result.unit == "chars" and abs(result.agreement - (1 - 1 / 6)) < 1e-6


FAMILIES = ["whisper", "whisper", "moonshine"]   # base, tiny.en, an independent third system


def test_support_of_the_selected_transcript():
    same = support(["the cat sat"] * 3, FAMILIES, no_space=False, max_error=0.4)
    assert same.agreement == 1.0 and same.mean_wer == 0.0 and same.selected == 0
    assert same.supporters == (1, 2) and same.dissent == () and same.families == 2
    # the best-confirmed hypothesis is selected, not simply the first
    mixed = support(["the bat sat on a hat", "the cat sat on the mat", "the cat sat on a mat"],
                    FAMILIES, no_space=False, max_error=0.4)
    # tiny.en and the third system tie on support; the third is closer to all others
    assert mixed.selected == 2 and abs(mixed.agreement - 5 / 6) < 1e-9
    apart = support(["completely different words here", "nothing in common at all"],
                    ["whisper", "moonshine"], no_space=False, max_error=0.4)
    assert apart.agreement == 0.0 and apart.supporters == ()


def test_one_garbage_system_cannot_veto_two_families_that_agree():
    # Whisper and an independent family wrote the reference; a third system wrote other words.
    digits = normalise("2 4 5 9 1 5 1 0")
    garbage = normalise("sheila cole or minute nine one nine one one year round")
    result = support([digits, garbage, digits], ["whisper", "sphinx", "moonshine"],
                     no_space=False, max_error=0.4)
    assert result.selected == 0 and result.agreement == 1.0 and result.families == 2
    assert result.supporters == (2,)
    assert [j for j, _ in result.dissent] == [1] and result.dissent[0][1] > 0.8
    # The old rule (1 - mean pairwise error) would have scored it under the 0.6 threshold.
    assert 1.0 - (2 * result.dissent[0][1]) / 3 < 0.6


def test_same_family_voters_count_as_one():
    # Whisper base and tiny.en agree, the only other family disagrees: nobody independent
    # confirms the transcript.
    result = support(["please enter the conference pin number"] * 2
                     + ["you can get a competent and i'm there"], FAMILIES, no_space=False,
                     max_error=0.4)
    assert result.agreement < 0.6 and result.families == 1


def test_ties_go_to_the_earlier_system():
    # three mutually different hypotheses, every pair equally far apart
    hyps = ["alpha beta", "gamma delta", "epsilon zeta"]
    results = [support(hyps, ["a", "b", "c"], no_space=False, max_error=0.4) for _ in range(3)]
    assert {r.selected for r in results} == {0} and results[0].agreement == 0.0
    assert support(hyps[::-1], ["a", "b", "c"], no_space=False, max_error=0.4).selected == 0
    # equal support: the one closer to all others wins before the order does
    close = support(["one two three four", "one two three five", "one two three four"],
                    ["a", "b", "c"], no_space=False, max_error=0.4)
    assert close.selected == 0 and close.agreement == 1.0


def test_symmetric_error_handles_empty_and_is_bounded():
    assert symmetric_error("", "", False) == 0.0
    assert symmetric_error("", "hello", False) == 1.0
    assert symmetric_error("a b c", "a b c d e f g h", False) <= 1.0
    assert symmetric_error("a b", "a c", False) == symmetric_error("a c", "a b", False)


def test_speaking_rate_units():
    assert speaking_rate("one two three four", 2.0, False) == 2.0
    assert speaking_rate("今天天气", 2.0, True) == 2.0


CFG = HallucinationConfig()


def reasons_of(text, duration=5.0, speech_prob=0.9, unit="words"):
    return [r for r, _ in check(text, duration, speech_prob, unit, CFG)]


def test_repeated_ngrams_are_caught():
    assert max_ngram_run("thank you thank you thank you thank you".split()) == 4
    assert max_ngram_run("a b c d".split()) == 1
    assert reasons.HALLUCINATION_REPETITION in reasons_of(
        "and then and then and then and then and then we left", duration=6)
    assert reasons.HALLUCINATION_REPETITION not in reasons_of(
        "he said that that was fine and left")


def test_rate_length_long_word_and_empty_rules():
    normal = "he might even have been made amiable himself"
    assert reasons_of(normal, duration=3.3) == []
    too_much = " ".join(["word"] * 40)
    assert reasons.HALLUCINATION_LENGTH in reasons_of(too_much, duration=2.0)
    assert reasons.HALLUCINATION_CHAR_RATE in reasons_of("a " * 5 + "x" * 120, duration=3.0)
    assert reasons.HALLUCINATION_CHAR_RATE in reasons_of("yes", duration=12.0)  # far too little
    assert reasons.HALLUCINATION_LONG_WORD in reasons_of("a" + "b" * 40 + " c", duration=3.0)
    assert reasons_of("", speech_prob=0.95) == [reasons.EMPTY_TRANSCRIPT]
    assert "clear" not in check("", 4.0, 0.3, "words", CFG)[0][1]
