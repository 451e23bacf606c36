"""Lines traced on a page's ink mask: steps 5 and 6 of :mod:`quill.models.segment`.

The mask, deskewed, is reduced to ~24 pixels per line spacing (:data:`TRACE_SPACING`) and
cut into text blocks at wide empty bands (:func:`text_blocks`). In each block the crests of
the ink density, smoothed along the line, are traced and their fragments joined into lines
(:func:`trace_lines`); every ink pixel then goes to the nearest line, each connected letter
whole, and specks, faint marks and graphics are dropped. :mod:`quill.models.segment`'s
docstring gives the method whole and the measurements behind its constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import (
    distance_transform_edt,
    find_objects,
    label,
    maximum_filter1d,
    uniform_filter1d,
)

from quill.errors import QuillError
from quill.models.page_geometry import reduce_mask

#: Line spacing, in pixels of the map lines are traced on (the ink mask reduced by an integer
#: factor): fine enough to tell an insertion squeezed between two lines from them.
TRACE_SPACING = 24
#: A crest weaker than this fraction of the strongest one within 0.75 line spacings above or
#: below it is part of that line.
WEAK_CREST = 0.4
#: Two fragments are one line when their facing ends (or, side by side, their paths) are at
#: most this many line spacings apart in height.
JOIN_STEP = 0.33


@dataclass
class TracedLine:
    """A text line traced on the reduced map: its ridge pixels, its region and its box."""

    ys: np.ndarray  # ridge rows
    xs: np.ndarray  # ridge columns
    region: int
    x0: int = 0  # first column of the ridge
    #: Ridge row in each column from x0 (nan: none)
    path: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Rows holding the middle 80% of the ink nearest the ridge (first, last).
    ink_rows: tuple[float, float] = (0.0, 0.0)
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 on the reduced map
    ink: float = 0.0
    margin: bool = False
    #: Ink in each row of the map (the line's own pixels).
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: The crest fragments it was joined from (their numbers in the fragments' owner map).
    fragments: tuple[int, ...] = ()

    @property
    def centre(self) -> float:
        """Mean row of the ridge."""
        return float(np.nanmean(self.path))


def _smooth(density: np.ndarray, rows: float, columns: float) -> np.ndarray:
    """Two box filters along each axis (about a Gaussian of the given widths, at O(1) cost
    per pixel whatever the width)."""
    out = density
    for axis, size in ((0, rows), (1, columns)):
        size = max(1, round(size))
        if size > 1:
            out = uniform_filter1d(uniform_filter1d(out, size, axis=axis), size, axis=axis)
    return out


def _empty_runs(counts: np.ndarray, tolerance: float) -> list[tuple[int, int]]:
    """Inner runs (start, end) of ``counts`` at or below ``tolerance`` (not touching either
    end)."""
    empty = np.concatenate(([False], counts <= tolerance, [False]))
    edges = np.flatnonzero(np.diff(empty.astype(np.int8)))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return [(a, b) for a, b in runs if a > 0 and b < len(counts)]


def text_blocks(occupied: np.ndarray, spacing: float) -> list[tuple[int, int, int, int]]:
    """Blocks of text (x0, y0, x1, y1) of a boolean map, in reading order: recursive XY cut
    at the widest empty band, a row band of at least one line ``spacing`` (a gap between
    sections) or a column band of 1.5 spacings through a block at least 2.5 lines high (a
    gutter between columns, or between a margin note and the text). Row cuts order blocks
    top to bottom, column cuts left to right.

    >>> page = np.zeros((100, 100), bool); page[10:90, 5:40] = page[10:90, 60:95] = True
    >>> text_blocks(page, 10)
    [(5, 10, 40, 90), (60, 10, 95, 90)]
    """
    blocks: list[tuple[int, int, int, int]] = []

    def cut(x0: int, y0: int, x1: int, y1: int) -> None:
        region = occupied[y0:y1, x0:x1]
        rows, columns = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        if rows.size == 0:
            return
        x0, x1 = x0 + int(columns[0]), x0 + int(columns[-1]) + 1
        y0, y1 = y0 + int(rows[0]), y0 + int(rows[-1]) + 1
        region = occupied[y0:y1, x0:x1]
        best: tuple[float, str, int, int] | None = None
        for start, end in _empty_runs(region.sum(axis=1), 0):
            if end - start >= spacing:
                best = max(best or (0.0, "", 0, 0), ((end - start) / spacing, "row", start, end))
        if y1 - y0 >= 2.5 * spacing:
            tolerance = 1 + 0.01 * (y1 - y0)  # a speck or two in a gutter
            for start, end in _empty_runs(region.sum(axis=0), tolerance):
                if end - start >= 1.5 * spacing:
                    gap = (end - start) / (1.5 * spacing)
                    best = max(best or (0.0, "", 0, 0), (gap, "column", start, end))
        if best is None:
            blocks.append((x0, y0, x1, y1))
        elif best[1] == "row":
            cut(x0, y0, x1, y0 + best[2])
            cut(x0, y0 + best[3], x1, y1)
        else:
            cut(x0, y0, x0 + best[2], y1)
            cut(x0 + best[3], y0, x1, y1)

    cut(0, 0, occupied.shape[1], occupied.shape[0])
    return blocks


#: The most line fragments (crests of ink, :func:`_ridges`) a page may make. Hooker's
#: letters make 70 to 150 for 12 to 20 lines, about 7 a line, so this is room for some 280
#: lines: more than a page at the analysis size can hold. Noise or a photographed texture
#: makes tens of thousands, and joining them in pairs (:func:`_join`'s n x n arrays) took
#: 12 GB and minutes.
MAX_FRAGMENTS = 2000


class TooManyFragments(QuillError):
    """The ink breaks into more than :data:`MAX_FRAGMENTS` fragments: not lines of writing.
    Caught by :func:`segment_lines`, which says so in its notes."""

    code = "not_writing"

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


def _ridges(
    density: np.ndarray, spacing: float, regions: np.ndarray
) -> tuple[list[TracedLine], np.ndarray]:
    """Line fragments: runs of pixels where the density, smoothed along the line and a little
    across it, peaks within 0.4 line spacings up and down, with ink nearby; and that smoothed
    density. :class:`TooManyFragments` past :data:`MAX_FRAGMENTS`, before any is built."""
    along = _smooth(density, 0.1 * spacing, 0.6 * spacing)
    near = _smooth(density, 0.1 * spacing, 0.2 * spacing)
    positive = along[along > 0]
    rank = int(0.99 * (positive.size - 1))
    top = float(np.partition(positive, rank)[rank]) if positive.size else 0.0  # 99th percentile
    window = max(3, int(0.8 * spacing) | 1)
    crest = (along >= maximum_filter1d(along, window, axis=0)) & (along > 0.08 * top)
    crest &= (near > 0.04 * top) & (regions > 0)
    # A weak crest beside a strong line is a piece of it (ascender tops, a t-bar, a quote
    # mark), not a line of its own; an insertion between lines is about as dense as they are.
    crest &= along >= WEAK_CREST * maximum_filter1d(along, int(1.5 * spacing) | 1, axis=0)
    labels, count = label(crest, structure=np.ones((3, 3), bool))
    if count > MAX_FRAGMENTS:
        raise TooManyFragments(count)
    fragments = []
    for index, found in enumerate(find_objects(labels), start=1):
        ys, xs = np.nonzero(labels[found] == index)
        ys, xs = ys + found[0].start, xs + found[1].start
        columns = xs - found[1].start
        path = np.bincount(columns, weights=ys) / np.bincount(columns)
        region = int(regions[ys[0], xs[0]])
        fragments.append(TracedLine(ys, xs, region, found[1].start, path, fragments=(index,)))
    return fragments, along


def _join(
    fragments: list[TracedLine], spacing: float, along: np.ndarray
) -> tuple[list[TracedLine], list[int]]:
    """Fragments of one line joined: same block, at most two spacings apart along the line
    (a gap between words) and :data:`JOIN_STEP` spacings across it at the facing ends, or
    half a spacing for two crests of one line (side by side with unbroken ink between them,
    or end to end with their ink in the same rows); never two that run side by side at
    different heights (an insertion above a line, the next line). Closest pairs first.
    Returns the lines and the line of each fragment."""
    count = len(fragments)
    if count < 2:
        return fragments, list(range(count))
    half = max(1, round(spacing / 2))
    x0 = np.array([f.x0 for f in fragments])
    x1 = np.array([f.x0 + f.path.size for f in fragments])
    left = np.array([f.path[:half].mean() for f in fragments])
    right = np.array([f.path[-half:].mean() for f in fragments])
    middle = np.array([f.path.mean() for f in fragments])
    region = np.array([f.region for f in fragments])
    top = np.array([f.ink_rows[0] for f in fragments], float)
    bottom = np.array([f.ink_rows[1] for f in fragments], float)
    shared_rows = np.minimum.outer(bottom, bottom) - np.maximum.outer(top, top)
    lowest = np.minimum.outer(bottom - top, bottom - top)
    same_row = shared_rows >= 0.6 * np.maximum(lowest, 1)

    gap = x0[None, :] - x1[:, None]  # [i, j]: from the end of i to the start of j
    candidate = (
        (x0[:, None] <= x0[None, :])
        & (region[:, None] == region[None, :])
        & (gap <= 2 * spacing)
        & ~np.eye(count, dtype=bool)
    )
    step = np.abs(right[:, None] - left[None, :])
    overlapping = (
        candidate & (gap < -spacing / 4) & (np.abs(middle[:, None] - middle[None, :]) < spacing)
    )
    # Pairs that may differ by half a spacing: two crests of one line (its letters' middle
    # and a heavy baseline).
    unbroken: set[tuple[int, int]] = set()
    for i, j in zip(*np.nonzero(overlapping), strict=True):  # side by side: compare there
        step[i, j] = _disagreement(fragments[i], fragments[j])
        if JOIN_STEP * spacing < step[i, j] <= spacing / 2 and _unbroken(
            fragments[i], fragments[j], along
        ):
            step[i, j] = JOIN_STEP * spacing
            unbroken.add((int(i), int(j)))
    # End to end, two pieces whose ink fills the same rows may have their crests further
    # apart (digits or capitals against a hand's heavy baseline).
    abutting = same_row & (gap >= -spacing / 4) & (gap <= spacing) & (step <= spacing / 2)
    accepted = candidate & ((step <= JOIN_STEP * spacing) | abutting)
    unbroken |= {(int(i), int(j)) for i, j in zip(*np.nonzero(accepted & abutting), strict=True)}
    pairs = sorted(
        (float(step[i, j] + 0.1 * max(gap[i, j], 0)), int(i), int(j))
        for i, j in zip(*np.nonzero(accepted), strict=True)
    )
    root = list(range(count))
    paths: dict[int, np.ndarray] = {}

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    def path(i: int) -> np.ndarray:
        if i not in paths:
            full = np.full(along.shape[1], np.nan)
            full[fragments[i].x0 : fragments[i].x0 + fragments[i].path.size] = fragments[i].path
            paths[i] = full
        return paths[i]

    for _, i, j in pairs:
        a, b = find(i), find(j)
        if a == b:
            continue
        pa, pb = path(a), path(b)
        both = ~np.isnan(pa) & ~np.isnan(pb)
        limit = (0.5 if (i, j) in unbroken else JOIN_STEP) * spacing
        if both.any() and np.abs(pa[both] - pb[both]).mean() > limit:
            continue
        root[b] = a
        paths[a] = np.where(np.isnan(pa), pb, np.where(np.isnan(pb), pa, (pa + pb) / 2))
    groups: dict[int, list[TracedLine]] = {}
    for i, fragment in enumerate(fragments):
        groups.setdefault(find(i), []).append(fragment)
    number = {key: index for index, key in enumerate(groups)}
    lines = []
    for key, parts in groups.items():
        if len(parts) == 1:
            lines.append(parts[0])
            continue
        full = paths[key]
        known = np.flatnonzero(~np.isnan(full))
        lines.append(
            TracedLine(
                np.concatenate([p.ys for p in parts]),
                np.concatenate([p.xs for p in parts]),
                parts[0].region,
                int(known[0]),
                full[known[0] : known[-1] + 1],
                fragments=tuple(number for part in parts for number in part.fragments),
            )
        )
    return lines, [number[find(i)] for i in range(count)]


def _unbroken(a: TracedLine, b: TracedLine, along: np.ndarray) -> bool:
    """Whether the smoothed density stays above 60% of the lower crest all the way between
    two side-by-side fragments (in most shared columns): one line's letters, not two lines
    (or a line and an insertion) with a valley between."""
    start, end = max(a.x0, b.x0), min(a.x0 + a.path.size, b.x0 + b.path.size)
    held = []
    for column in range(start, end):
        ya, yb = a.path[column - a.x0], b.path[column - b.x0]
        if np.isnan(ya) or np.isnan(yb):
            continue
        low, high = sorted((round(ya), round(yb)))
        profile = along[low : high + 1, column]
        held.append(profile.min() >= 0.6 * min(profile[0], profile[-1]))
    return bool(held) and sum(held) > 0.5 * len(held)


def _disagreement(a: TracedLine, b: TracedLine) -> float:
    """Mean height difference of two fragments over the columns they share."""
    start, end = max(a.x0, b.x0), min(a.x0 + a.path.size, b.x0 + b.path.size)
    return float(
        np.abs(a.path[start - a.x0 : end - a.x0] - b.path[start - b.x0 : end - b.x0]).mean()
    )


def _nearest(
    density: np.ndarray, fragments: list[TracedLine], spacing: float, bridged: bool = False
) -> np.ndarray:
    """Owner of each ink pixel of the map: 1 + the index of the nearest ridge (a column step
    counts double a row step), 0 for paper and for ink farther than 0.9 spacing from any.
    ``bridged``: each ridge is its path, interpolated across its gaps."""
    seeds = np.zeros(density.shape, np.int32)
    for number, fragment in enumerate(fragments, start=1):
        if bridged:
            rows = np.rint(_bridged(fragment.path)).astype(np.intp)
            seeds[rows, np.arange(rows.size) + fragment.x0] = number
        else:
            seeds[fragment.ys, fragment.xs] = number
    distance, (iy, ix) = distance_transform_edt(
        seeds == 0, sampling=(1.0, 2.0), return_indices=True
    )
    return np.where((distance <= 0.9 * spacing) & (density > 0), seeds[iy, ix], 0)


def _row_ink(density: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """Ink in each row of the map per owner: (count, H), row 0 for unowned ink."""
    height = density.shape[0]
    cells = (owner * height + np.arange(height)[:, None]).ravel()
    return np.bincount(cells, density.ravel(), count * height).reshape(count, height)


def _ink_rows(density: np.ndarray, owner: np.ndarray, fragments: list[TracedLine]) -> None:
    """Each fragment's :attr:`TracedLine.ink_rows`: 10th and 90th percentile rows of its ink."""
    count = len(fragments) + 1
    cumulative = np.cumsum(_row_ink(density, owner, count), axis=1)
    total = np.maximum(cumulative[:, -1:], 1e-9)
    low = (cumulative < 0.1 * total).sum(axis=1)
    high = (cumulative < 0.9 * total).sum(axis=1)
    for number, fragment in enumerate(fragments, start=1):
        fragment.ink_rows = (float(low[number]), float(high[number]) + 1)


def _measure(
    density: np.ndarray, owner: np.ndarray, lines: list[TracedLine], spacing: float
) -> None:
    """Each line's box: the extent of the ink it owns, trimmed of rows with under 3% of its
    fullest row and of columns with only a speck; its ink and ink per row with it."""
    width = density.shape[1]
    count = len(lines) + 1
    rows = _row_ink(density, owner, count)
    cells = (owner * width + np.arange(width)[None, :]).ravel()
    columns = np.bincount(cells, density.ravel(), count * width).reshape(count, width)
    columns = uniform_filter1d(columns, max(1, round(spacing / 4)), axis=1)
    for number, line in enumerate(lines, start=1):
        row = line.rows = rows[number]
        filled = np.flatnonzero(row > 0.03 * row.max(initial=0.0))
        used = np.flatnonzero(columns[number] > 0.02)
        line.ink = 0.0
        if filled.size and used.size:
            line.box = (int(used[0]), int(filled[0]), int(used[-1]) + 1, int(filled[-1]) + 1)
            line.ink = float(row.sum())


def _attached(
    owner: np.ndarray,
    strokes: np.ndarray,
    lines: list[TracedLine],
    widths: list[float],
    longest: float,
    apart: float,
) -> np.ndarray:
    """Where each short line goes when it is a loop or a stroke of another: most of its ink
    lies in connected strokes that also run into other lines (each holding at least half as
    much of the stroke); it goes to the nearest of those, by ridge height. Returns a lookup
    table for ``owner`` (identity for the others)."""
    count = len(lines) + 1
    owners, stroke_ids, counts = _shares(owner, strokes)
    # For each (owner, stroke) pair: the most any *other* owner holds of that stroke.
    first, second, leader = _two_largest(stroke_ids, counts, owners, int(strokes.max()) + 1)
    rival = np.where(leader[stroke_ids] == owners, second[stroke_ids], first[stroke_ids])
    shared = rival >= 0.5 * counts
    total = np.bincount(owners, counts, minlength=count)
    shared_total = np.bincount(owners, np.where(shared, counts, 0), minlength=count)
    centres = np.array([np.inf] + [line.centre for line in lines])
    lookup = np.arange(count)
    for number in range(1, count):
        if widths[number - 1] > longest or not shared_total[number] > 0.5 * total[number]:
            continue
        mine = owners == number
        touched = stroke_ids[mine]
        holds = counts[mine]
        pairs = np.isin(stroke_ids, touched) & (owners != number)
        # another owner shares a stroke when it holds at least half of what this one does
        needed = dict(zip(touched.tolist(), (0.5 * holds).tolist(), strict=True))
        others = np.unique(
            [
                o
                for o, s, c in zip(owners[pairs], stroke_ids[pairs], counts[pairs], strict=True)
                if c >= needed[int(s)]
            ]
        ).astype(np.int64)
        target = int(others[np.argmin(np.abs(centres[others] - centres[number]))])
        if abs(centres[target] - centres[number]) > apart:  # else: the same line, joined later
            lookup[number] = target
    # A chain (a -> b -> c) ends where it stops; a cycle keeps its first line.
    for number in range(1, count):
        seen = {number}
        while lookup[lookup[number]] != lookup[number] and lookup[number] not in seen:
            seen.add(int(lookup[number]))
            lookup[number] = lookup[lookup[number]]
    return lookup


@dataclass
class Trace:
    """The lines traced on a deskewed mask, in reading order, with what the page told."""

    lines: list[TracedLine]
    blocks: list[tuple[int, int, int, int]]
    factor: int  # mask pixels per traced-map pixel
    #: Evidence the page is upright (> 0) or upside down (< 0); 0 without enough lines.
    upright: float


def trace_lines(mask: np.ndarray, spacing: int) -> Trace:
    """Trace the text lines of a deskewed ink ``mask`` whose lines are ``spacing`` apart."""
    factor = max(1, round(spacing / TRACE_SPACING))
    density = reduce_mask(mask, factor)
    step = spacing / factor
    density = without_graphics(density, step)
    occupied = density > 0
    blocks = text_blocks(occupied, step)
    regions = np.zeros(density.shape, np.int32)
    for number, (x0, y0, x1, y1) in enumerate(blocks, start=1):
        regions[y0:y1, x0:x1] = number
    fragments, along = _ridges(density, step, regions)
    owner = _nearest(density, fragments, step)
    strokes = _letter_strokes(occupied, 1.5 * step)
    # Loops and strokes of a line that made ridges of their own go to that line...
    lengths = [f.path.size / step for f in fragments]
    lookup = _attached(owner, strokes, fragments, lengths, 1.0, JOIN_STEP * step)
    kept = [i for i in range(len(fragments)) if lookup[i + 1] == i + 1]
    _ink_rows(density, owner, fragments)
    fragment_of = lookup[owner]  # each pixel's fragment (an attached stroke's: its host's)
    dense = _dense(density, fragment_of, fragments, step)
    lines, group = _join([fragments[i] for i in kept], step, along)
    line_of = np.zeros(len(fragments) + 1, np.int64)
    line_of[[i + 1 for i in kept]] = np.asarray(group) + 1
    # Ink goes to the nearest line, its ridge bridged across gaps between words (else an
    # underline below a gap goes to the line above), except what went to absorbed strokes.
    absorbed = lookup[owner] != owner
    nearest = _nearest(density, lines, step, bridged=True)
    owner = np.where(absorbed, line_of[lookup[owner]], nearest)
    _measure(density, owner, lines, step)
    # ... and so do short lines that are mostly such strokes (a lone loop, a flourish), and
    # small pieces inside or at the end of a line (a capital, a tall "!").
    widths = [(line.box[2] - line.box[0]) / step for line in lines]
    lookup = _attached(owner, strokes, lines, widths, 3.0, JOIN_STEP * step)
    for number, text in enumerate(_is_text(lines, step), start=1):
        if not text and lookup[number] == number:
            lookup[number] = 0  # a speck, a faint mark: nobody's
    lookup = _absorb(lines, lookup, step)
    for _ in range(len(lines)):  # a piece of a line that went to another goes there too
        if (lookup[lookup] == lookup).all():
            break
        lookup = lookup[lookup]
    if (lookup != np.arange(lookup.size)).any():
        kept = [i for i in range(len(lines)) if lookup[i + 1] == i + 1]
        renumber = np.zeros(len(lines) + 1, np.int64)
        renumber[[i + 1 for i in kept]] = np.arange(1, len(kept) + 1)
        owner = renumber[lookup[owner]]
        lines = [lines[i] for i in kept]
    owner = _by_letter(owner, strokes, 0.9 * step)
    _measure(density, owner, lines, step)
    owner = _without_faint_company(density, owner, fragment_of, dense, lines, step)
    upright = upright_evidence(lines, step)
    lines = [line for line, text in zip(lines, _is_text(lines, step), strict=True) if text]
    mark_margins(lines, blocks)
    lines.sort(key=lambda line: (line.margin, line.region, line.centre, line.box[0]))
    return Trace(lines, blocks, factor, upright)


def upright_evidence(lines: list[TracedLine], spacing: float) -> float:
    """Evidence that the text is upright (> 0) rather than upside down (< 0), in [-2, 2]:

    - Latin script has more ascenders (b d f h k l t, capitals, accents, i-dots) than
      descenders (g j p q y): the share of ink above each line's core (rows with at least
      half its fullest row's ink) minus the share below;
    - lines start at a margin and end ragged: how much more the right ends of the lines
      scatter than their left starts (median deviations, per line spacing).

    0 with fewer than three lines two spacings long: too little to tell.
    """
    long = [i for i, line in enumerate(lines) if line.box[2] - line.box[0] >= 2 * spacing]
    if len(long) < 3:
        return 0.0
    above = below = 0.0
    for index in long:
        row = lines[index].rows
        core = np.flatnonzero(row >= 0.5 * row.max())
        above += row[: core[0]].sum()
        below += row[core[-1] + 1 :].sum()
    starts = np.array([lines[i].box[0] for i in long], float)
    ends = np.array([lines[i].box[2] for i in long], float)
    left = np.median(np.abs(starts - np.median(starts)))
    right = np.median(np.abs(ends - np.median(ends)))
    return float(
        (above - below) / max(above + below, 1e-9) + (right - left) / (right + left + spacing)
    )


def without_graphics(density: np.ndarray, spacing: float) -> np.ndarray:
    """The map without connected ink taller than 2.5 line spacings: a stamp's ring, a frame,
    a rule down the margin, a drawing. (Handwriting whose lines touch spans two spacings at
    most: none taller on the four Hooker pages and 30 synthetic ones but a stamp.)"""
    blobs, _ = label(density > 0, structure=np.ones((3, 3), bool))
    tall = np.asarray(
        [False] + [f[0].stop - f[0].start > 2.5 * spacing for f in find_objects(blobs)]
    )  # (labels + 1,): label 0 is the background
    return np.where(tall[blobs], np.float32(0), density) if tall.any() else density


def _letter_strokes(occupied: np.ndarray, tallest: float) -> np.ndarray:
    """Connected strokes of the map (labels), without those taller than ``tallest`` (a
    stamp's circle, a rule, a long flourish: not a letter tying a loop to its line)."""
    strokes, _ = label(occupied, structure=np.ones((3, 3), bool))
    tall = [False] + [found[0].stop - found[0].start > tallest for found in find_objects(strokes)]
    return np.where(np.asarray(tall)[strokes], 0, strokes)


def _by_letter(owner: np.ndarray, strokes: np.ndarray, tallest: float) -> np.ndarray:
    """Each connected stroke no taller than ``tallest`` (a letter or a word, not two lines
    touching) goes whole to the line that owns most of it: a t-bar or a capital's flourish
    nearer the next line stays with its letter."""
    count = int(strokes.max()) + 1
    if count == 1:
        return owner
    owners, stroke_ids, counts = _shares(owner, strokes)
    _, _, major = _two_largest(stroke_ids, counts, owners, count)
    heights = np.zeros(count)
    for number, found in enumerate(find_objects(strokes), start=1):
        if found is not None:
            heights[number] = found[0].stop - found[0].start
    letter = (heights <= tallest) & (major > 0)
    return np.where(letter[strokes], major[strokes], owner)


def _shares(owner: np.ndarray, strokes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much of each connected stroke each line owns, as three aligned arrays (owner,
    stroke, pixels), pairs with no pixels, no owner or no stroke left out. Sparse: a noisy
    page has thousands of both, whose full table would not fit in memory."""
    strokes_count = int(strokes.max()) + 1
    keys, counts = np.unique(owner.astype(np.int64) * strokes_count + strokes, return_counts=True)
    owners, stroke_ids = np.divmod(keys, strokes_count)
    keep = (owners > 0) & (stroke_ids > 0)
    return owners[keep], stroke_ids[keep], counts[keep]


def _two_largest(
    stroke_ids: np.ndarray, counts: np.ndarray, owners: np.ndarray, strokes_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stroke: the largest share, the second largest, and the owner of the largest
    (the lowest-numbered on a tie; 0 and 0 where nobody owns any of it)."""
    first = np.zeros(strokes_count, np.int64)
    second = np.zeros(strokes_count, np.int64)
    leader = np.zeros(strokes_count, np.int64)
    if not stroke_ids.size:  # no line owns any stroke (a dot and a rule, say)
        return first, second, leader
    order = np.lexsort((owners, -counts, stroke_ids))
    ids, shares, holders = stroke_ids[order], counts[order], owners[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    first[ids[starts]] = shares[starts]
    leader[ids[starts]] = holders[starts]
    runner_up = starts + 1
    has_second = runner_up < ids.size
    has_second[has_second] &= ids[runner_up[has_second]] == ids[starts[has_second]]
    second[ids[starts[has_second]]] = shares[runner_up[has_second]]
    return first, second, leader


def _absorb(lines: list[TracedLine], lookup: np.ndarray, spacing: float) -> np.ndarray:
    """Pieces of a line traced apart join a longer line of their block, the one whose ridge
    (bridged across its gaps) is nearest to the piece's middle or to its own ridge:

    - in the line: over a stretch where the line has no ridge of its own (the piece's taller
      letters, digits or brackets took the crest there), or with most of its ink in the
      line's core rows, within half a spacing, at most four spacings wide;
    - over the line's ink: within a third of a spacing, at most two spacings wide (a capital,
      a tall "!"), and no other line under it nearer;
    - beyond one end (at most 1.5 spacings away): a last word that rises or drops, within
      half a spacing of the ridge's end, at most 2.5 spacings wide;
    - a speck (at most 0.7 spacings wide: a loop, an accent, a quote mark) within 0.6 of a
      spacing, over the line or half a spacing beyond its end.

    An insertion between two lines lies over the ink of both and further from them."""
    lookup = lookup.copy()
    boxes = np.array([line.box for line in lines]).reshape(-1, 4)
    widths = boxes[:, 2] - boxes[:, 0]
    half = max(1, round(spacing / 2))
    ridges = [_bridged(line.path) for line in lines]
    for index, line in enumerate(lines):
        if widths[index] > 4 * spacing or lookup[index + 1] != index + 1:
            continue
        x0, y0, x1, y1 = boxes[index]
        heights = ((y0 + y1) / 2, line.centre)
        speck = widths[index] <= 0.7 * spacing
        best, nearest_under = None, np.inf
        for other, host in enumerate(lines):
            if other == index or host.region != line.region or lookup[other + 1] != other + 1:
                continue
            start, end = max(x0, host.x0), min(x1, host.x0 + host.path.size)
            if end - start >= widths[index] / 2:  # over the host
                stretch = slice(start - host.x0, end - host.x0)
                distance = min(abs(h - ridges[other][stretch].mean()) for h in heights)
                if speck:
                    fits = distance <= 0.6 * spacing
                elif np.isnan(host.path[stretch]).mean() >= 0.6 or _in_core(line, host):
                    fits = distance <= spacing / 2  # in a gap of its ridge, or its letters
                else:
                    nearest_under = min(nearest_under, distance)
                    fits = widths[index] <= 2 * spacing and distance <= spacing / 3
            else:  # beyond one end (or hardly over it): the ridge's height at that end
                right = x0 + x1 >= 2 * host.x0 + host.path.size
                ridge = (ridges[other][-half:] if right else ridges[other][:half]).mean()
                distance = min(abs(h - ridge) for h in heights)
                fits = (
                    start - end <= (0.5 if speck else 1.5) * spacing
                    and distance <= (0.6 if speck else 0.5) * spacing
                    and widths[index] <= 2.5 * spacing
                )
            if fits and widths[other] > widths[index] and (best is None or distance < best[0]):
                best = (distance, other)
        if best is not None and best[0] <= nearest_under:
            lookup[index + 1] = best[1] + 1
    return lookup


def _in_core(piece: TracedLine, line: TracedLine) -> bool:
    """Whether most of ``piece``'s ink lies in the core rows of ``line`` (those with at least
    half its fullest row's ink): written in that line, not above or below it."""
    if not piece.rows.size or not line.rows.size:
        return False
    core = np.flatnonzero(line.rows >= 0.5 * line.rows.max())
    return bool(piece.rows[core[0] : core[-1] + 1].sum() >= 0.5 * piece.ink)


def _bridged(path: np.ndarray) -> np.ndarray:
    """A ridge path with its gaps (nan) filled by straight lines."""
    known = ~np.isnan(path)
    if known.all():
        return path
    columns = np.arange(path.size)
    return np.interp(columns, columns[known], path[known])


def _is_text(lines: list[TracedLine], spacing: float) -> list[bool]:
    """Which lines are text: not specks (at least a third of a spacing wide, a fifth high,
    with ink of a 0.02-square-spacing blot) and not much fainter than the page's lines
    (:func:`_faint`: a stamp, bleed-through, a ruled edge)."""
    solid = _solid(lines, spacing)
    return [ok and not faint for ok, faint in zip(solid, _faint(lines, solid), strict=True)]


def _solid(lines: list[TracedLine], spacing: float) -> list[bool]:
    """Which lines are more than a speck: at least a third of a spacing wide, a fifth high,
    with ink of a 0.02-square-spacing blot."""
    return [
        line.box[2] - line.box[0] >= spacing / 3
        and line.box[3] - line.box[1] >= spacing / 5
        and line.ink >= 0.02 * spacing**2
        for line in lines
    ]


#: A line whose ink per box area is under this fraction of the median of the page's solid
#: lines is a faint mark, not text (a stamp's letters: 0.1 of the median on Hooker's page
#: 146_001; its small printed letterhead, the thinnest real text seen, 0.5).
FAINT = 0.3


def _faint(lines: list[TracedLine], solid: list[bool]) -> list[bool]:
    """Which lines are much fainter than the ``solid`` ones: ink per box area under
    :data:`FAINT` of their median; none when no line is solid (nothing to compare with)."""
    density = [
        line.ink / max(1, (line.box[2] - line.box[0]) * (line.box[3] - line.box[1]))
        for line in lines
    ]
    if not any(solid):
        return [False] * len(lines)
    typical = float(np.median([d for d, ok in zip(density, solid, strict=True) if ok]))
    return [d < FAINT * typical for d in density]


def _dense(
    density: np.ndarray, owner: np.ndarray, fragments: list[TracedLine], spacing: float
) -> np.ndarray:
    """Which crest fragments are text on their own (:func:`_is_text` among the fragments,
    each measured on the ink it owns), as a lookup by fragment number (0: none)."""
    _measure(density, owner, fragments, spacing)
    return np.array([False, *_is_text(fragments, spacing)])


def _without_faint_company(
    density: np.ndarray,
    owner: np.ndarray,
    fragment_of: np.ndarray,
    dense: np.ndarray,
    lines: list[TracedLine],
    spacing: float,
) -> np.ndarray:
    """``owner`` with each line that is too faint to be text (:func:`_faint`) but was
    joined from some fragments that are text on their own (``dense``, by fragment number;
    ``fragment_of``: each pixel's fragment) left with the ink of those alone.

    Faint marks at a line's height a word's gap beside it join it like words: a stamp's
    letters beside a small printed letterhead line (Hooker's 146_001: "THE CAMP." and the
    stamp's date, 0.9 spacings apart) dilute its ink per box area below the faintness test,
    and the whole line was dropped. What is kept is what the test would keep had it been
    traced alone, so whether a line survives no longer depends on the faint marks beside
    it; a stamp or bleed-through whose pieces are all faint is still dropped, and a line
    that passes the test is left as it is. The lines changed are measured again."""
    solid = _solid(lines, spacing)
    company = np.zeros(owner.shape, bool)
    for number, (line, faint) in enumerate(zip(lines, _faint(lines, solid), strict=True), 1):
        kept = [part for part in line.fragments if dense[part]]
        if solid[number - 1] and faint and 0 < len(kept) < len(line.fragments):
            company |= (owner == number) & ~np.isin(fragment_of, kept)
    if not company.any():
        return owner
    owner = np.where(company, 0, owner)
    _measure(density, owner, lines, spacing)
    return owner


def mark_margins(lines: list[TracedLine], blocks: list[tuple[int, int, int, int]]) -> None:
    """Lines of a narrow block beside the main text (the block with the most lines), left or
    right of it and overlapping its rows, are margin notes."""
    if not lines:
        return
    counts = np.bincount([line.region for line in lines], minlength=len(blocks) + 1)
    main = int(counts.argmax())
    mx0, my0, mx1, my1 = blocks[main - 1]
    for line in lines:
        x0, y0, x1, y1 = blocks[line.region - 1]
        beside = x1 <= mx0 or x0 >= mx1
        overlapping = min(y1, my1) - max(y0, my0) > 0
        line.margin = (
            line.region != main and beside and overlapping and x1 - x0 < 0.35 * (mx1 - mx0)
        )


def count_columns(blocks: list[tuple[int, int, int, int]], lines: list[TracedLine]) -> int:
    """The most blocks of main text side by side (sharing rows), counting blocks of at least
    three lines (a date beside a letterhead is not a column)."""
    counts = np.bincount(
        [line.region for line in lines if not line.margin], minlength=len(blocks) + 1
    )
    if not counts.any():
        return 0
    tall = [number for number in range(1, len(blocks) + 1) if counts[number] >= 3]
    best = 1
    for number in tall:
        y0, y1 = blocks[number - 1][1], blocks[number - 1][3]
        beside = [o for o in tall if min(y1, blocks[o - 1][3]) > max(y0, blocks[o - 1][1])]
        best = max(best, len(beside))
    return best
