"""Which annotation of a task becomes the label, and how far its annotators agree.

Policy (documented in docs/annotation.md and the annotator instructions): cancelled
(skipped) annotations never count; an annotation a reviewer marked ``ground_truth`` wins;
otherwise the most recently updated one wins, since a later pass usually fixes an earlier
one. Agreement compares the chosen transcription of the page with each other annotator's
(another ``completed_by``; a second submission by the same person is no second reading):
``1 - edit distance / longer length``, best match taken, so "at least one other annotator
read the page (nearly) the same way".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quill.evaluation import edit_distance


def text_agreement(a: str, b: str) -> float:
    """1.0 for identical texts, 0.0 for nothing in common.

    >>> text_agreement("the cat", "the cat"), round(text_agreement("the cat", "the cut"), 3)
    (1.0, 0.857)
    >>> text_agreement("", "")
    1.0
    """
    longer = max(len(a), len(b))
    return 1.0 if longer == 0 else 1.0 - edit_distance(a, b) / longer


def _timestamp(annotation: dict[str, Any]) -> tuple[datetime, int]:
    """Sort key: last update (or creation) time, then id, for "the most recent" annotation."""
    stamp = annotation.get("updated_at") or annotation.get("created_at") or ""
    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.now().astimezone().tzinfo)
    except ValueError:
        when = datetime.min.replace(tzinfo=datetime.now().astimezone().tzinfo)
    identifier = annotation.get("id")
    return when, identifier if isinstance(identifier, int) else 0


def usable(annotations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Annotations that were submitted, not skipped."""
    return [a for a in annotations if not a.get("was_cancelled")]


def annotator(annotation: dict[str, Any]) -> object:
    """Who made ``annotation`` (``completed_by``: a user id, or in some exports the user
    object, whose id or e-mail is taken), or None when the export does not say."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return who.get("id", who.get("email"))
    return who


def second_readings(
    annotations: list[dict[str, Any]], chosen: dict[str, Any]
) -> list[dict[str, Any]]:
    """The usable annotations agreement with ``chosen`` is measured against: those of other
    annotators. One person submitting twice agrees with themself, which says nothing about
    whether the page reads that way.

    >>> [a["id"] for a in second_readings(
    ...     [{"id": 1, "completed_by": 7}, {"id": 2, "completed_by": 7},
    ...      {"id": 3, "completed_by": 8}, {"id": 4}], {"id": 2, "completed_by": 7})]
    [3, 4]
    """
    who = annotator(chosen)
    return [
        a for a in usable(annotations) if a is not chosen and (who is None or annotator(a) != who)
    ]


def choose(annotations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The annotation that becomes the label (see the module docstring), or None.

    >>> choose([{"id": 1, "updated_at": "2026-01-02T00:00:00Z"},
    ...         {"id": 2, "updated_at": "2026-01-01T00:00:00Z", "ground_truth": True},
    ...         {"id": 3, "updated_at": "2026-01-03T00:00:00Z", "was_cancelled": True}])["id"]
    2
    >>> choose([{"id": 1, "updated_at": "2026-01-02T00:00:00Z"},
    ...         {"id": 2, "updated_at": "2026-01-01T00:00:00Z"}])["id"]
    1
    """
    candidates = usable(annotations)
    if not candidates:
        return None
    reviewed = [a for a in candidates if a.get("ground_truth")]
    return max(reviewed or candidates, key=_timestamp)
