"""Charts as inline SVG, drawn on the server: nothing to download, nothing from the internet.

Each chart has a <title> and a text description for screen readers, uses presentation
attributes only (the pages' Content-Security-Policy forbids inline styles), and colours
chosen for at least 3:1 contrast against the white page (WCAG 1.4.11).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape

from markupsafe import Markup

from notify.times import iso_utc

STATUS_COLOURS = {
    "delivered": "#1a7f37",
    "sent": "#2f6fb3",
    "pending": "#6e7781",
    "sending": "#9a6700",
    "failed": "#c62828",
    "bounced": "#8e24aa",
    "undelivered": "#bc4c00",
    "skipped": "#3d444d",
}
LINE = "#2f6fb3"
GRID = "#d0d7de"
TEXT = "#1f2328"
MAX_POINTS = 240


def minute_series(counts: dict[str, int]) -> tuple[list[tuple[datetime, float]], int]:
    """Per-minute counts (``"YYYY-MM-DD HH:MM"`` -> n, UTC) as a gap-free series of at most
    MAX_POINTS points: longer spans are grouped into buckets of several minutes, each
    point the average per minute. Returns the points and the bucket size in minutes."""
    if not counts:
        return [], 1
    parsed = {
        datetime.strptime(k, "%Y-%m-%d %H:%M").replace(tzinfo=UTC): n for k, n in counts.items()
    }
    # One quiet minute on each side, so a burst within a single minute still draws a peak.
    start, end = min(parsed) - timedelta(minutes=1), max(parsed) + timedelta(minutes=1)
    minutes = int((end - start).total_seconds() // 60) + 1
    bucket = max(1, -(-minutes // MAX_POINTS))
    points: list[tuple[datetime, float]] = []
    for i in range(0, minutes, bucket):
        total = sum(parsed.get(start + timedelta(minutes=i + j), 0) for j in range(bucket))
        points.append((start + timedelta(minutes=i), total / bucket))
    return points, bucket


def cumulative(points: list[tuple[datetime, float]], bucket: int) -> list[tuple[datetime, float]]:
    """Running totals of a per-minute series (completions so far at each point)."""
    total, out = 0.0, []
    for when, per_minute in points:
        total += per_minute * bucket
        out.append((when, total))
    return out


def _utc_label(when: datetime) -> Markup:
    iso = iso_utc(when)
    return Markup('<tspan data-utc="{}">{}</tspan>').format(iso, when.strftime("%d %b %H:%M UTC"))


def line_chart(
    points: list[tuple[datetime, float]],
    title: str,
    description: str,
    y_label: str,
    width: int = 640,
    height: int = 220,
) -> Markup:
    """An area/line chart of a time series (x: time, y: value), with its axis extremes."""
    if not points:
        return Markup('<p class="empty">{}</p>').format(f"{title}: nothing yet.")
    left, right, top, bottom = 56, 12, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(v for _, v in points) or 1.0
    n = len(points)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / peak

    coords = [(x(i), y(v)) for i, (_, v) in enumerate(points)]
    line = " ".join(
        f"{'M' if i == 0 else 'L'}{cx:.1f},{cy:.1f}" for i, (cx, cy) in enumerate(coords)
    )
    area = f"{line} L{coords[-1][0]:.1f},{top + plot_h} L{coords[0][0]:.1f},{top + plot_h} Z"
    peak_text = f"{peak:,.0f}" if peak >= 10 else f"{peak:,.1f}"
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title><desc>{escape(description)}</desc>",
        f'<line x1="{left}" y1="{top}" x2="{left + plot_w}" y2="{top}" stroke="{GRID}"/>',
        f'<line x1="{left}" y1="{top + plot_h / 2}" x2="{left + plot_w}" '
        f'y2="{top + plot_h / 2}" stroke="{GRID}"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        f'stroke="{TEXT}"/>',
        f'<path d="{area}" fill="{LINE}" fill-opacity="0.15"/>',
        f'<path d="{line}" fill="none" stroke="{LINE}" stroke-width="2"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="12" '
        f'fill="{TEXT}">{peak_text}</text>',
        f'<text x="{left - 6}" y="{top + plot_h + 4}" text-anchor="end" font-size="12" '
        f'fill="{TEXT}">0</text>',
        f'<text x="{left}" y="{height - 8}" font-size="12" fill="{TEXT}">'
        f"{_utc_label(points[0][0])}</text>",
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" font-size="12" '
        f'fill="{TEXT}">{_utc_label(points[-1][0])}</text>',
        f'<text x="14" y="{top + plot_h / 2}" font-size="12" fill="{TEXT}" '
        f'transform="rotate(-90 14 {top + plot_h / 2})" text-anchor="middle">'
        f"{escape(y_label)}</text>",
        "</svg>",
    ]
    return Markup("".join(parts))


def status_bars(
    messages: dict[str, dict[str, int]], labels: dict[str, str], width: int = 640
) -> Markup:
    """One horizontal bar per channel, split by status, with a legend of counts."""
    if not messages:
        return Markup('<p class="empty">No messages yet.</p>')
    left, bar_h, gap = 64, 28, 14
    plot_w = width - left - 12
    # The legend (only the statuses present), wrapped onto as many rows as it needs.
    shown = [s for s in STATUS_COLOURS if any(by.get(s) for by in messages.values())]
    bars_h = len(messages) * (bar_h + gap) + gap
    legend, x, row = [], left, 0
    for status in shown:
        item_w = 30 + 8 * len(status)
        if x + item_w > width and x > left:
            x, row = left, row + 1
        legend.append((status, x, bars_h + 12 + row * 22))
        x += item_w
    height = bars_h + 22 * (row + 1) + 6
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Messages by status, per channel">'
        "<title>Messages by status, per channel</title>"
    ]
    desc = []
    for row, (channel, by_status) in enumerate(messages.items()):
        total = sum(by_status.values()) or 1
        top = gap + row * (bar_h + gap)
        parts.append(
            f'<text x="{left - 8}" y="{top + bar_h / 2 + 4}" text-anchor="end" '
            f'font-size="13" fill="{TEXT}">{escape(labels.get(channel, channel))}'
            "</text>"
        )
        offset = 0.0
        for status, n in by_status.items():
            if not n:
                continue
            w = plot_w * n / total
            parts.append(
                f'<rect x="{left + offset:.1f}" y="{top}" width="{max(w, 1):.1f}" '
                f'height="{bar_h}" fill="{STATUS_COLOURS.get(status, GRID)}">'
                f"<title>{escape(channel)} {escape(status)}: {n:,}</title></rect>"
            )
            offset += w
        desc.append(f"{channel}: " + ", ".join(f"{s} {n}" for s, n in by_status.items() if n))
    for status, x, y in legend:
        parts.append(
            f'<rect x="{x}" y="{y - 11}" width="12" height="12" '
            f'fill="{STATUS_COLOURS[status]}"/><text x="{x + 17}" y="{y}" '
            f'font-size="13" fill="{TEXT}">{status}</text>'
        )
    parts.append(f"<desc>{escape('; '.join(desc))}</desc></svg>")
    return Markup("".join(parts))
