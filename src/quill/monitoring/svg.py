"""Small inline SVG charts for the self-contained report.

The report must open from a file, offline, years later: no CDN, no plotting runtime. Two
chart kinds cover it (overlaid histograms and stacked bars), drawn as plain SVG markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

BASELINE_COLOUR = "#4c78a8"
PRODUCTION_COLOUR = "#f58518"
FLAG_COLOURS = {"incorrect": "#e45756", "offensive": "#b279a2", "other": "#9d9da0"}


def _number(value: float) -> str:
    """Short axis label.

    >>> _number(1234.5), _number(0.01234), _number(3.0)
    ('1.23e+03', '0.0123', '3')
    """
    return f"{value:.3g}"


def histogram(
    baseline: np.ndarray,
    production: np.ndarray,
    title: str,
    *,
    bins: int = 24,
    width: int = 300,
    height: int = 150,
) -> str:
    """Overlaid density histograms of baseline and production on shared bins."""
    pad_left, pad_bottom, pad_top = 8, 20, 18
    plot_w, plot_h = width - 2 * pad_left, height - pad_bottom - pad_top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{pad_left}" y="12" font-size="12" font-weight="bold">{escape(title)}</text>',
    ]
    both = np.concatenate([baseline, production])
    if both.size == 0:
        parts.append(f'<text x="{pad_left}" y="{height // 2}" font-size="11">no data</text>')
        return "".join(parts) + "</svg>"
    low, high = float(both.min()), float(both.max())
    if high == low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    series = [(baseline, BASELINE_COLOUR), (production, PRODUCTION_COLOUR)]
    shares = [
        np.histogram(values, edges)[0] / max(len(values), 1) if len(values) else None
        for values, _ in series
    ]
    top = max(float(s.max()) for s in shares if s is not None) or 1.0
    bar_w = plot_w / bins
    for share, (_, colour) in zip(shares, series, strict=True):
        if share is None:
            continue
        for i, value in enumerate(share):
            if value <= 0:
                continue
            h = value / top * plot_h
            x = pad_left + i * bar_w
            y = pad_top + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour}" fill-opacity="0.55"/>'
            )
    axis_y = pad_top + plot_h
    parts.append(
        f'<line x1="{pad_left}" y1="{axis_y}" x2="{pad_left + plot_w}" y2="{axis_y}" '
        'stroke="#333"/>'
        f'<text x="{pad_left}" y="{height - 5}" font-size="10">{_number(low)}</text>'
        f'<text x="{pad_left + plot_w}" y="{height - 5}" font-size="10" '
        f'text-anchor="end">{_number(high)}</text>'
    )
    return "".join(parts) + "</svg>"


def stacked_bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[int]],
    title: str,
    *,
    width: int = 720,
    height: int = 200,
) -> str:
    """Bars per label stacked by series (flags per day), with a legend and the max count."""
    pad_left, pad_bottom, pad_top = 30, 34, 24
    plot_w, plot_h = width - pad_left - 10, height - pad_bottom - pad_top
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{pad_left}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
    ]
    legend_x = width - 10
    for name in reversed(list(series)):
        colour = FLAG_COLOURS.get(name, "#777")
        parts.append(
            f'<text x="{legend_x}" y="14" font-size="11" text-anchor="end" '
            f'fill="{colour}">■ {escape(name)}</text>'
        )
        legend_x -= 12 + 7 * len(name) + 14
    slot = plot_w / max(len(labels), 1)
    for i, label in enumerate(labels):
        y: float = pad_top + plot_h
        for name, values in series.items():
            h = values[i] / top * plot_h
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{pad_left + i * slot + 1:.1f}" y="{y:.1f}" '
                    f'width="{max(slot - 2, 1):.1f}" height="{h:.1f}" '
                    f'fill="{FLAG_COLOURS.get(name, "#777")}"><title>{escape(label)} '
                    f"{escape(name)}: {values[i]}</title></rect>"
                )
        if len(labels) <= 16 or i % max(len(labels) // 8, 1) == 0:
            parts.append(
                f'<text x="{pad_left + (i + 0.5) * slot:.1f}" y="{height - 18}" font-size="9" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    axis_y = pad_top + plot_h
    parts.append(
        f'<line x1="{pad_left}" y1="{axis_y}" x2="{pad_left + plot_w}" y2="{axis_y}" '
        'stroke="#333"/>'
        f'<text x="{pad_left - 4}" y="{pad_top + 8}" font-size="10" '
        f'text-anchor="end">{top}</text>'
        f'<text x="{pad_left - 4}" y="{axis_y}" font-size="10" text-anchor="end">0</text>'
    )
    return "".join(parts) + "</svg>"
