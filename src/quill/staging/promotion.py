"""The promotion gate: a staged model becomes the champion only if its report card passed.

``quill evaluate`` (monitoring) writes the report card; promoting is staging's step, so the
gate that reads the card lives here and monitoring re-exports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from quill.errors import QuillError


class PromotionRefused(QuillError, RuntimeError):
    """A candidate fails its report card (or has none)."""

    code = "promotion_refused"


class ReportCardError(QuillError, ValueError):
    """The file given as a report card is not one (not JSON, or no checks): an input to fix,
    not a verdict on the candidate."""

    code = "report_card_invalid"


def check_promotion(card_path: Path, candidate_version: str, *, force: bool = False) -> list[str]:
    """Raise :class:`PromotionRefused` unless the card at ``card_path`` passed for this
    candidate; with ``force``, return the failures as warnings instead.
    :class:`ReportCardError` if the file is not a report card."""
    if not card_path.is_file():
        raise PromotionRefused(
            f"no report card at {card_path}: run `quill evaluate --candidate ... --current ...`"
        )
    card = _read_card(card_path)
    if card.get("candidate", {}).get("version") != candidate_version:
        raise PromotionRefused(
            f"{card_path} evaluates {card.get('candidate', {}).get('version')!r}, "
            f"not {candidate_version!r}"
        )
    failures = [f"{c['rule']}: {c['detail']}" for c in card["checks"] if not c["passed"]]
    if failures and not force:
        raise PromotionRefused(
            "candidate fails its report card (use --force to promote anyway):\n  "
            + "\n  ".join(failures)
        )
    return failures


def _read_card(card_path: Path) -> dict:
    """The report card at ``card_path``: a JSON object with a list of checks, as ``quill
    evaluate`` writes it; :class:`ReportCardError` for anything else."""
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportCardError(f"{card_path} is not a report card (JSON): {exc}") from exc
    if not isinstance(card, dict) or not isinstance(card.get("checks"), list):
        raise ReportCardError(
            f"{card_path} is not a report card: no list of checks (`quill evaluate` writes one)"
        )
    return card
