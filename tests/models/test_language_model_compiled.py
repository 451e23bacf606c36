"""CharNGramLM's compiled form: the same probabilities as the JSON, loaded in milliseconds."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

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


def reference_tables(counts, order):
    """Kneser-Ney's tables as the model's docstring defines them, a context at a time: what
    the compiled arrays must hold."""
    continuation: dict[str, Counter[str]] = defaultdict(Counter)
    for context, following in counts.items():
        if context:
            for char in following:
                continuation[context[1:]][char] += 1
    tables = {}
    for context, following in counts.items():
        chosen = following if len(context) == order - 1 else continuation.get(context, following)
        tables[context] = (dict(chosen), sum(chosen.values()))
    return tables


@pytest.mark.parametrize("order", [1, 2, 3, 5, 10])
def test_the_array_compilation_holds_every_context_s_kneser_ney_table(order):
    """The tables are built with array operations (a second for the English LM where a loop
    took ten); every context's entries and total are those of the definition, sorted by
    character, and nothing else is in them; keyed for the compiled search where the keys fit
    in 63 bits (not at order 10 over the Latin alphabet)."""
    latin = Tokenizer.named("latin")
    rng = np.random.default_rng(order)
    letters = list("abé cœ’.")
    texts = ["".join(rng.choice(letters, size=int(rng.integers(1, 30)))) for _ in range(60)]
    texts += ["", "a", "Zz"]  # an empty line; contexts seen only at line starts
    lm = CharNGramLM.fit(texts, order=order, tokenizer=latin)
    compiled = lm._tables.compiled
    expected = reference_tables(lm.counts, order)
    assert sorted(compiled.contexts.tolist()) == compiled.contexts.tolist() == sorted(expected)
    for context, (following, total) in expected.items():
        assert compiled.lookup(context) == (following, total)
    for i in range(len(compiled.contexts)):
        entries = compiled.following[2 * compiled.starts[i] : 2 * compiled.starts[i + 1] : 2]
        assert entries.tolist() == sorted(entries.tolist())
    assert compiled.lookup("zzzz"[: order - 1] or "q") is None
    assert (compiled.keys is None) == (order == 10)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"abcd": {"e": 1}}, "longer than an order-3 model's 2"),
        ({"ab": {"\u4e00": 1}}, "character outside the alphabet"),
        ({"ab": {"cd": 1}}, "more than one character"),
        ({"ab": {"c": 0}}, "counts must be between 1"),
        ({"ab": {"c": None}}, "int"),
        ({"ab": ["c"]}, "counts must map each context"),
    ],
)
def test_counts_that_make_no_tables_are_a_clear_error(tmp_path, counts, message):
    path = CharNGramLM.fit(["abc"], order=3).save(tmp_path / "lm.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "counts": counts}))
    with pytest.raises(ValueError, match=f"cannot read language model .*lm.json: .*{message}"):
        CharNGramLM.load(path)
