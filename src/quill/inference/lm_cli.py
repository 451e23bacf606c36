"""``quill lm fit|tune``: a character language model for CTC beam search."""

from __future__ import annotations

import json
from pathlib import Path

import typer

lm_app = typer.Typer(
    help="Character language model for CTC beam search: fit it on text, tune it on val data.",
    no_args_is_help=True,
)


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from exc


def _beam_widths(text: str) -> list[int]:
    widths = _floats(text)
    if not widths or any(w != int(w) or w < 2 for w in widths):
        raise typer.BadParameter(f"beam widths must be whole numbers of at least 2, got {text!r}")
    return [int(w) for w in widths]


@lm_app.command("fit")
def fit(
    out: Path = typer.Argument(..., help="Where to write the model (JSON, e.g. lm.json)."),
    text: list[Path] = typer.Option([], help="UTF-8 text file(s), one line per line of text."),
    dataset: list[Path] = typer.Option(
        [], help="Dataset folder(s) with a manifest: their train split's transcriptions."
    ),
    corpus: bool = typer.Option(
        True, help="Also count Jane Austen's novels (the synthetic data's corpus)."
    ),
    order: int = typer.Option(
        6, min=1, max=12, help="Characters of context + 1 (6: lowest Hooker val perplexity)."
    ),
    evaluate: list[Path] = typer.Option(
        [], help="Dataset folder(s) whose val split's perplexity to report."
    ),
) -> None:
    """Count character n-grams and write the language model."""
    from rich.console import Console

    from quill.data.manifest import Manifest
    from quill.inference.decoding_tuning import training_texts
    from quill.models.language_model import CharNGramLM

    console = Console(stderr=True)
    missing = [str(p) for p in [*text, *dataset, *evaluate] if not p.exists()]
    if missing:
        console.print(f"[red]error:[/] not found: {', '.join(missing)}")
        raise typer.Exit(1)
    texts = list(training_texts(text, dataset, corpus))
    if not texts:
        console.print("[red]error:[/] no text: give --text, --dataset or keep --corpus")
        raise typer.Exit(1)
    with console.status(f"counting {order}-grams over {sum(map(len, texts)):,} characters"):
        lm = CharNGramLM.fit(texts, order=order)
        lm.save(out)
    size = out.stat().st_size / 1e6
    console.print(f"wrote {out}: {len(lm.counts):,} contexts, {size:.1f} MB")
    for folder in evaluate:
        val = [sample.text for sample in Manifest.load(folder).split("val")]
        console.print(f"perplexity on {folder} val ({len(val)} lines): {lm.perplexity(val):.2f}")


@lm_app.command("tune")
def tune(
    model: Path = typer.Argument(..., help="Staged CTC model directory."),
    data: Path = typer.Option(..., help="Dataset folder with a manifest (line samples)."),
    lm: Path = typer.Option(None, help="Language model from `quill lm fit` (none: beam only)."),
    split: str = typer.Option("val", help="Split to tune on (never tune on test)."),
    weights: str = typer.Option("0.2,0.4,0.6,0.8,1.0", help="LM weights to try."),
    bonuses: str = typer.Option("0,0.5,1,2", help="Per-character insertion bonuses to try."),
    beam: str = typer.Option("8", help="Beam widths to try."),
    prunes: str = typer.Option(
        "-12",
        help="Per-frame log-probabilities at or below which a character is not tried, to try "
        "(higher is faster and may cost accuracy; -8 and -5 are worth measuring).",
    ),
    max_ms: float = typer.Option(
        None,
        help="Choose the best setting that decodes a line within this many milliseconds "
        "(as measured by this run) [default: no limit].",
        show_default=False,
    ),
    limit: int = typer.Option(0, min=0, help="Use at most this many lines (0: all)."),
    write: bool = typer.Option(
        False, help="Store the best setting in the model's decoding section (LM copied in)."
    ),
) -> None:
    """Compare greedy, beam and beam+LM decoding on one model run; optionally keep the best."""
    from rich.console import Console
    from rich.progress import Progress

    from quill.data.manifest import Manifest
    from quill.inference import decoding_tuning
    from quill.inference.backends import ModelLoadError
    from quill.inference.recognizer import Recognizer
    from quill.models.language_model import CharNGramLM

    console = Console(stderr=True, soft_wrap=True)
    try:
        recognizer = Recognizer.from_path(model, decoding="greedy")
        language = CharNGramLM.load(lm) if lm else None
        manifest = Manifest.load(data)
    except (ModelLoadError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    samples = [s for s in manifest.split(split) if s.kind == "line"][: limit or None]
    if not samples:
        console.print(f"[red]error:[/] {data} has no {split!r} line samples")
        raise typer.Exit(1)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("running the model", total=len(samples))
        try:
            batches = decoding_tuning.record_log_probs(
                recognizer,
                [manifest.path_of(s) for s in samples],
                lambda: progress.advance(task),
            )
        except ValueError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
    results = decoding_tuning.tune(
        batches,
        [s.text for s in samples],
        recognizer.tokenizer.decode,
        language,
        _floats(weights),
        _floats(bonuses),
        _beam_widths(beam),
        _floats(prunes),
        progress=lambda setting: console.print(f"trying {setting}", style="dim"),
    )
    print(f"{model} on {data} {split}: {len(samples)} lines, best first")
    print(f"{'CER':>8} {'ms/line':>8}  decoding")
    for result in results:
        print(f"{result.cer:8.4f} {result.ms_per_line:8.2f}  {json.dumps(result.setting)}")
    best = decoding_tuning.best_within(results, max_ms)
    budget = f" within {max_ms:g} ms per line" if max_ms is not None else ""
    print(f"best{budget}: {json.dumps(best.setting)}")
    if write:
        tuned_on = f"{len(samples)} {split} lines of `{data}`{budget}"
        path = decoding_tuning.attach(model, lm, best.setting, results, tuned_on)
        console.print(f"wrote decoding {best.setting} to {path}")
