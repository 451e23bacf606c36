"""``quill lm wordlist|words``: word lists that beam search checks its readings against.

``quill lm wordlist`` writes a list (the words of text files, of datasets' train
transcriptions, of Austen's novels); ``quill lm words`` tunes what a word missing from a
language's list costs on val lines with the model's own decoding and, with ``--write``,
copies the list into the model (:mod:`quill.models.lexicon`, docs/models.md "Word lists").
Both join ``quill lm`` (``lm_app``) when this module is imported
(:func:`quill.inference.cli.register` does), sharing the tuning commands' helpers in
:mod:`quill.inference.lm_cli`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from quill.errors import check_output, fail
from quill.inference.lm_cli import (
    LinesLimit,
    TuningSplit,
    _floats,
    _print_results,
    _record,
    _split_texts_or_exit,
    _text_lines,
    _trying,
    lm_app,
)
from quill.staged_model import ModelLoadError, StagedModel


@lm_app.command("wordlist")
def wordlist(
    out: Annotated[Path, typer.Argument(help="Where to write the word list (e.g. words-fr.txt).")],
    text: Annotated[
        list[Path] | None,
        typer.Option(help="UTF-8 text file(s): running text, or a word list, one word a line."),
    ] = None,
    dataset: Annotated[
        list[Path] | None,
        typer.Option(help="Dataset folder(s), as `quill lm fit` reads them: their train split."),
    ] = None,
    corpus: Annotated[
        bool, typer.Option(help="Also take the words of Jane Austen's novels.")
    ] = False,
) -> None:
    """Write a word list for `quill lm words`: the words (runs of letters, lower case) of
    text files, of datasets' train transcriptions and of Austen's novels, one a line."""
    from rich.console import Console

    from quill.data.synth.corpus import load_corpus
    from quill.models.lexicon import save_words, words_of
    from quill.vocab import Tokenizer

    text, dataset = text or [], dataset or []
    missing = [str(p) for p in [*text, *dataset] if not p.exists()]
    if missing:
        raise fail(f"not found: {', '.join(missing)}")
    check_output(out, folder=False, option="OUT")
    lines = [line for path in text for line in _text_lines(path)]
    for folder in dataset:
        lines += _split_texts_or_exit(folder, "train", Tokenizer.named("latin"))[0]
    if corpus:
        lines += load_corpus().paragraphs
    found = words_of(lines)
    if not found:
        raise fail("no words to write: give --text, --dataset or --corpus holding some letters")
    out.parent.mkdir(parents=True, exist_ok=True)
    count = save_words(out, found)
    Console(stderr=True).print(f"wrote {out}: {count:,} words")


@lm_app.command("words")
def words(
    model: Annotated[Path, typer.Argument(help="Staged CTC model directory that beam-searches.")],
    word_list: Annotated[
        Path,
        typer.Option(
            "--words",
            exists=True,
            dir_okay=False,
            help="The language's word list: UTF-8, one word a line (`quill lm wordlist`).",
        ),
    ],
    data: Annotated[
        list[Path], typer.Option(help="Dataset folder with a manifest (line samples); repeat.")
    ],
    language: Annotated[
        str | None,
        typer.Option(
            help="Another language the decoding reads (`quill lm language`) whose readings the "
            "list checks (default: the main language's).",
            show_default=False,
        ),
    ] = None,
    penalties: Annotated[
        str,
        typer.Option(
            help="What a word missing from the list costs (natural log, as the LM's scores), "
            "comma-separated; 0 reads without the list."
        ),
    ] = "0,1,2,3,4",
    split: TuningSplit = "val",
    limit: LinesLimit = 0,
    write: Annotated[
        bool,
        typer.Option(help="Store the best penalty, and the list, in the model's decoding."),
    ] = False,
) -> None:
    """Check beam search's readings against a word list: each word of a reading missing from
    it lowers the reading's rank by a penalty as soon as the word ends (quill.models.lexicon).
    Tune the penalty on val data with the model's own decoding; optionally keep the best."""
    from rich.console import Console

    from quill.inference import decoding_tuning
    from quill.models.lexicon import WordLexicon
    from quill.staged_model import DecodingConfig
    from quill.staging.model_card import with_header, with_words_section

    grid = _floats(penalties, "--penalties")
    if any(not math.isfinite(p) or p < 0 for p in grid):
        raise typer.BadParameter("penalties are finite and at least 0", param_hint="--penalties")
    # everything is checked before the model runs over the data, which takes minutes
    try:
        staged = StagedModel.load(model)
        lexicon = WordLexicon.load(word_list, staged.tokenizer)
    except (ModelLoadError, ValueError) as exc:
        raise fail(str(exc)) from exc
    if staged.decoding is None or staged.decoding.method != "beam":
        raise fail(f"{model} does not beam-search: give it a beam search first (quill lm tune)")
    others = sorted(item.language for item in staged.decoding.languages or ())
    if language is not None and language not in others:
        raise fail(
            f"{model}'s decoding reads no language {language!r} (besides its main one it reads "
            f"{others or 'none'}): add it first (quill lm language --write)"
        )
    console = Console(stderr=True, soft_wrap=True)
    # a model that is not CTC is refused here (record_log_probs)
    recognizer, batches, texts, names, sets = _record(model, data, split, limit, console, None)
    results = decoding_tuning.tune_words(
        batches,
        texts,
        recognizer.tokenizer.decode,
        recognizer.runtime.decoder,
        language,
        lexicon,
        grid,
        _trying(console),
        sets,
    )
    reading = language or "its main language"
    print(f"{model} reading {reading} with {word_list} ({len(lexicon.words):,} words)")
    print(f"on {names} {split}: {len(texts)} lines, best first")
    _print_results(results, sets, "word penalty", lambda r: f"{r.setting['word_penalty']:g}")
    penalty = results[0].setting["word_penalty"]
    print(f"best: word penalty {penalty:g}")
    if write:
        staged = recognizer.model.set_words(word_list, penalty, language)
        if staged.card_path.is_file():
            rows = [(r.setting["word_penalty"], r.cer, r.ms_per_line) for r in results]
            written = (staged.decoding or DecodingConfig()).to_dict()
            tuned_on = f"{len(texts)} {split} lines of `{names}`"
            per_set = [r.per_set for r in results]
            card = with_words_section(
                staged.card_path.read_text(), written, language, rows, tuned_on, per_set
            )
            staged.card_path.write_text(with_header(card, staged))
        console.print(f"wrote word penalty {penalty:g} to {staged.metadata_path}: {staged.version}")
