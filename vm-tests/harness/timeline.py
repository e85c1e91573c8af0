"""Boot timeline per node as an SVG a person can open in a browser (pure: data in, text out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

# Colours per stage, chosen to stay distinguishable when printed in grey.
COLOURS = {
    "grub": "#9e9e9e", "kernel": "#5c6bc0", "systemd": "#26a69a", "cloud-init-local": "#ffb300",
    "cloud-init-network": "#fb8c00", "cloud-init-config": "#f4511e", "cloud-init-final": "#8d6e63",
    "prep-ok": "#43a047", "cloud-init-done": "#1e88e5", "bootstrap-ok": "#2e7d32", "bootstrap-failed": "#c62828",
    "login": "#7e57c2", "ssh": "#00838f", "checks": "#546e7a", "reboot": "#ad1457",
}


@dataclass(frozen=True)
class Row:
    node: str
    role: str
    events: tuple[tuple[str, float], ...]  # (kind, seconds since start), any order
    ok: bool


def _nice_step(span: float) -> int:
    for step in (5, 10, 15, 30, 60, 120, 300, 600):
        if span / step <= 12:
            return step
    return 1200


def render_timeline(rows: Sequence[Row], title: str) -> str:
    """One lane per node: a bar from each event to the next (coloured by the stage it starts), a tick and label
    at every event."""
    width, left, right, lane, top = 1100, 170, 30, 70, 60
    span = max([t for r in rows for _, t in r.events] + [10.0])
    span = span * 1.05
    scale = (width - left - right) / span
    height = top + lane * len(rows) + 90

    def x(t: float) -> float:
        return round(left + t * scale, 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>']
    step = _nice_step(span)
    for s in range(0, int(span) + 1, step):
        out.append(f'<line x1="{x(s)}" y1="{top - 10}" x2="{x(s)}" y2="{top + lane * len(rows)}" '
                   f'stroke="#e0e0e0"/>')
        out.append(f'<text x="{x(s)}" y="{top + lane * len(rows) + 14}" text-anchor="middle" '
                   f'fill="#616161">{s}s</text>')
    for i, row in enumerate(rows):
        y = top + i * lane
        events = sorted(row.events, key=lambda e: e[1])
        status = "#2e7d32" if row.ok else "#c62828"
        out.append(f'<text x="10" y="{y + 22}" font-weight="bold" fill="{status}">{escape(row.node)}</text>')
        out.append(f'<text x="10" y="{y + 37}" fill="#616161">{escape(row.role)}</text>')
        for (kind, t0), (_next, t1) in zip(events, events[1:], strict=False):
            out.append(f'<rect x="{x(t0)}" y="{y + 12}" width="{max(x(t1) - x(t0), 1)}" height="16" '
                       f'fill="{COLOURS.get(kind, "#bdbdbd")}"><title>{escape(kind)}: {t0:.1f}s to '
                       f'{t1:.1f}s</title></rect>')
        for j, (kind, t) in enumerate(events):
            colour = COLOURS.get(kind, "#424242")
            out.append(f'<line x1="{x(t)}" y1="{y + 8}" x2="{x(t)}" y2="{y + 32}" stroke="{colour}" '
                       f'stroke-width="2"/>')
            # Alternate label heights so close events stay readable.
            ly = y + 44 + (j % 3) * 11
            out.append(f'<text x="{x(t)}" y="{ly}" fill="{colour}" font-size="9">{escape(kind)} '
                       f'{t:.0f}s</text>')
    legend_y = top + lane * len(rows) + 40
    lx = left
    for kind in sorted({k for r in rows for k, _ in r.events}, key=lambda k: list(COLOURS).index(k)
                       if k in COLOURS else 99):
        out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" '
                   f'fill="{COLOURS.get(kind, "#bdbdbd")}"/>')
        out.append(f'<text x="{lx + 14}" y="{legend_y}">{escape(kind)}</text>')
        lx += 24 + 6 * len(kind)
        if lx > width - right - 120:  # wrap the legend instead of running off the picture
            lx, legend_y = left, legend_y + 16
    out.append("</svg>")
    return "\n".join(out) + "\n"
