import pytest

from quill.vocab import DEFAULT_CHARACTERS, Tokenizer, UnknownCharacterError

IAM_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !\"#&'()*+,-./:;?"


def test_covers_iam_and_newline():
    assert set(IAM_CHARACTERS) <= set(DEFAULT_CHARACTERS)
    assert "\n" in DEFAULT_CHARACTERS


def test_round_trip_paragraph():
    tok = Tokenizer()
    text = 'He said: "Hooker & Co. (1899)" -- £5?\nNext line!'
    ids = tok.encode(text)
    assert min(ids) >= 3
    assert tok.decode(ids) == text


def test_unknown_characters_are_reported_not_dropped():
    tok = Tokenizer()
    with pytest.raises(UnknownCharacterError) as info:
        tok.encode("café ∞")
    assert info.value.unknown == ["é", "∞"]
    assert "é" in str(info.value)


def test_decode_stops_at_eos_and_skips_specials():
    tok = Tokenizer()
    ids = [tok.bos_id, *tok.encode("ab"), tok.eos_id, *tok.encode("zz")]
    assert tok.decode(ids) == "ab"


def test_serialisation_round_trip():
    tok = Tokenizer(characters="abc")
    again = Tokenizer.from_dict(tok.to_dict())
    assert again == tok
    assert len(again) == 6


def test_duplicate_characters_rejected():
    with pytest.raises(ValueError, match="unique"):
        Tokenizer(characters="aab")
