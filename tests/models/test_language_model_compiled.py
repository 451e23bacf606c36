"""CharNGramLM's compiled form: the same probabilities as the JSON, loaded in milliseconds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from quill.models.language_model import EMPTY_SLOT, LINE_START, CharNGramLM, key_hash
from quill.vocab import Tokenizer

TEXTS = ["the botanic garden at Kew", "the herbarium is there", "then they wrote to Kew"]


@pytest.fixture(scope="module")
def lm() -> CharNGramLM:
    return CharNGramLM.fit(TEXTS, order=4)


def test_compiled_scores_exactly_as_the_counts(lm, tmp_path):
    source = lm.save(tmp_path / "lm.json")
    compiled = CharNGramLM.load_compiled(lm.save_compiled(tmp_path / "lm.compiled"), source)
    assert compiled.order == lm.order and compiled.tokenizer == lm.tokenizer
    rng = np.random.default_rng(0)
    characters = list(lm.tokenizer.characters)
    histories = ["", "th", "the", "zzq", "Kew and", LINE_START, LINE_START + "t"]
    histories += ["".join(rng.choice(characters, size=int(rng.integers(0, 5)))) for _ in range(40)]
    for history in histories:
        for char in characters:
            assert compiled.char_log_prob(history, char) == lm.char_log_prob(history, char)
    tokenizer = Tokenizer()
    for text in ("Kew Gard", "t", "", "xq the"):
        prefix = tuple(tokenizer.encode(text))
        for token in (*tokenizer.encode("eat K"), Tokenizer.blank_id):
            assert compiled.log_prob(prefix, token) == lm.log_prob(prefix, token)
    assert compiled.perplexity(TEXTS) == lm.perplexity(TEXTS)
    # the counts are read from the JSON only when asked for
    assert compiled._counts is None
    assert compiled.counts == lm.counts


def test_context_log_prob_is_log_prob_of_the_cut_prefix(lm):
    tokenizer = Tokenizer()
    prefix = tuple(tokenizer.encode("the herbarium"))
    token = tokenizer.encode("i")[0]
    assert lm.context_length == 3
    assert lm.context_log_prob(prefix[-3:], token) == lm.log_prob(prefix, token)
    assert lm.context_log_prob(prefix[:1], token) == lm.log_prob(prefix[:1], token)
    assert lm.context_log_prob((), token) == lm.log_prob((), token)


def test_a_latin_lm_compiles(tmp_path):
    latin = Tokenizer.named("latin")
    lm = CharNGramLM.fit(["il a été là", "sa sœur l’été"], order=3, tokenizer=latin)
    compiled = CharNGramLM.load_compiled(lm.save_compiled(tmp_path / "c"))
    for history in ("il a ", "l’é", "sa s", ""):
        for char in "éœ’ae":
            assert compiled.char_log_prob(history, char) == lm.char_log_prob(history, char)
    with pytest.raises(ValueError, match="without its counts"):
        compiled.counts  # noqa: B018 - no source JSON was named


def test_a_bad_compiled_folder_is_a_clear_error(lm, tmp_path):
    with pytest.raises(ValueError, match="cannot read compiled language model"):
        CharNGramLM.load_compiled(tmp_path / "missing")
    folder = lm.save_compiled(tmp_path / "c")
    header = json.loads((folder / "header.json").read_text())
    (folder / "header.json").write_text(json.dumps({**header, "format_version": 99}))
    with pytest.raises(ValueError, match="unsupported format_version"):
        CharNGramLM.load_compiled(folder)
    (folder / "header.json").write_text(json.dumps(header))
    (folder / "starts.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="cannot read compiled"):
        CharNGramLM.load_compiled(folder)


def test_every_context_still_sums_to_one_compiled(lm, tmp_path):
    compiled = CharNGramLM.load_compiled(lm.save_compiled(tmp_path / "c"))
    for history in ("", "th", "zzq", LINE_START):
        total = sum(math.exp(compiled.char_log_prob(history, c)) for c in lm.tokenizer.characters)
        assert total == pytest.approx(1.0, abs=1e-9)


def test_the_compiled_form_carries_the_beam_search_tables(lm, tmp_path):
    """The compiled beam search's context keys and their hash table are saved with the tables
    (a new process maps them instead of computing and hashing them: 0.1 s for the default's
    English LM), equal to those made from the counts; every key is found walking from its home
    slot as ``_ctc_beam.c`` walks; and a search with the loaded LM reads as with the fitted
    one."""
    from quill.models.decoding import ctc_beam_search

    compiled = CharNGramLM.load_compiled(lm.save_compiled(tmp_path / "c"))
    fitted, loaded = lm.beam_tables(), compiled.beam_tables()
    assert fitted is not None and loaded is not None
    assert (tmp_path / "c" / "slots.npy").is_file()
    assert np.array_equal(fitted.slots, loaded.slots)
    keys = compiled._tables.compiled.keys
    assert len(set(keys.tolist())) == len(keys)  # one key per context
    slots = loaded.slots.reshape(-1, 2)
    mask = len(slots) - 1
    for context, key in enumerate(keys.tolist()):
        slot = int(key_hash(np.array([key], np.uint64))[0]) & mask
        while slots[slot, 0] != key:
            assert slots[slot, 0] != EMPTY_SLOT  # a free slot before the key: it is lost
            slot = (slot + 1) & mask
        assert slots[slot, 1] == context
    frames = np.log(np.random.default_rng(2).dirichlet(np.full(len(lm.tokenizer), 0.1), 40))
    for model in (lm, compiled):
        assert ctc_beam_search(frames[None], lm=model, compiled=True) == ctc_beam_search(
            frames[None], lm=lm, compiled=False
        )
