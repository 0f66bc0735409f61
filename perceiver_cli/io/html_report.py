"""One self-contained HTML page for a person to look at a run: a headline table, breakdown tables and bar
charts, and cards of the worst items with their pictures.

Nothing on the page is fetched when it opens: styles and the few lines of table-sorting script are inline,
charts are inline SVG (no plotting library to vendor), pictures are PNG `data:` URIs. Every number shown
carries its exact value in `data-value` and what it is in `data-key`, so a program (a test, a script) reads
the figures back without parsing the formatted text. The page is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from perceiver_cli.io.store_write import atomic_write

Cell = Union[str, int, float, None, "Number"]
CHART_WIDTH, CHART_BAR_HEIGHT = 640, 18
# Bar colours of a chart's series, in order (colour-blind safe, Okabe and Ito).
SERIES_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9")


@dataclass
class Number:
    """A figure as shown: its exact value, its key (what it is: a summary key path or item:field), its decimals."""

    value: Optional[float]
    key: str = ""
    decimals: int = 3

    def text(self) -> str:
        if self.value is None or (isinstance(self.value, float) and not math.isfinite(self.value)):
            return "–"
        if isinstance(self.value, int) and not isinstance(self.value, bool):
            return str(self.value)
        return f"{self.value:.{self.decimals}f}"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""


@dataclass
class BarChart:
    """Horizontal bars: one group per label, one bar per series (None values are left out)."""

    title: str
    labels: list[str]
    series: dict[str, list[Optional[float]]]
    unit: str = ""


@dataclass
class Picture:
    caption: str
    png: bytes


@dataclass
class Card:
    """One of the worst items: its name, its figures, its pictures and a few lines of text."""

    title: str
    figures: list[tuple[str, Number]]
    pictures: list[Picture] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass
class Page:
    title: str
    headline: Table
    facts: list[tuple[str, str]]
    blocks: list[Union[Table, BarChart]] = field(default_factory=list)
    worst_title: str = "Worst items"
    worst: list[Card] = field(default_factory=list)
    partial: bool = False


def png_bytes(picture: np.ndarray) -> bytes:
    """An (H, W, 3) or (H, W) uint8 array as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(value: Cell, tag: str = "td") -> str:
    if isinstance(value, Number):
        exact = "" if value.value is None else repr(float(value.value))
        key = f' data-key="{_escape(value.key)}"' if value.key else ""  # a count of rows is no figure
        return f'<{tag} class="num"{key} data-value="{exact}">{_escape(value.text())}</{tag}>'

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _cell(Number(value, decimals=0 if isinstance(value, int) else 3), tag)
    return f"<{tag}>{_escape('' if value is None else value)}</{tag}>"


def table_html(table: Table) -> str:
    head = "".join(f'<th scope="col">{_escape(c)}</th>' for c in table.columns)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    note = f'<p class="note">{_escape(table.note)}</p>' if table.note else ""
    return (f"<section><h2>{_escape(table.title)}</h2>{note}<div class=\"scroll\"><table class=\"sortable\">"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div></section>")


def chart_svg(chart: BarChart) -> str:
    """The chart as inline SVG: a label column, bars scaled to the largest value, each value written beside."""
    names = list(chart.series)
    values = [v for series in chart.series.values() for v in series if v is not None and math.isfinite(v)]
    top = max(values + [0.0]) or 1.0
    label_width, value_width = 190, 70
    span = CHART_WIDTH - label_width - value_width
    rows, y = [], 4
    for index, label in enumerate(chart.labels):
        rows.append(f'<text x="{label_width - 6}" y="{y + CHART_BAR_HEIGHT * 0.75:.1f}" text-anchor="end">'
                    f"{_escape(label[:28])}</text>")
        for number, name in enumerate(names):
            value = chart.series[name][index]
            if value is None or not math.isfinite(value):
                y += CHART_BAR_HEIGHT
                continue
            width = max(0.0, value) / top * span
            colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
            rows.append(f'<rect x="{label_width}" y="{y + 2}" width="{width:.1f}" height="{CHART_BAR_HEIGHT - 4}" '
                        f'fill="{colour}"><title>{_escape(name)}: {value:.4g}</title></rect>')
            rows.append(f'<text x="{label_width + width + 4:.1f}" y="{y + CHART_BAR_HEIGHT * 0.75:.1f}">'
                        f"{value:.3g}</text>")
            y += CHART_BAR_HEIGHT
        y += 6
    legend = "".join(f'<span class="key" style="background:{SERIES_COLOURS[i % len(SERIES_COLOURS)]}"></span>'
                     f"{_escape(name)} " for i, name in enumerate(names))
    unit = f" ({_escape(chart.unit)})" if chart.unit else ""
    return (f"<section><h2>{_escape(chart.title)}{unit}</h2><p class=\"legend\">{legend}</p>"
            f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {y + 4}" role="img" '
            f'aria-label="{_escape(chart.title)}">{"".join(rows)}</svg></section>')


def card_html(card: Card) -> str:
    figures = "".join(f"<dt>{_escape(label)}</dt>{_cell(number, 'dd')}" for label, number in card.figures)
    pictures = "".join(f'<figure><img alt="{_escape(p.caption)}" src="data:image/png;base64,'
                       f'{base64.b64encode(p.png).decode("ascii")}"><figcaption>{_escape(p.caption)}</figcaption>'
                       "</figure>" for p in card.pictures)
    lines = "".join(f"<li>{_escape(line)}</li>" for line in card.lines)
    return (f'<article class="card"><h3>{_escape(card.title)}</h3><dl>{figures}</dl>'
            f'<div class="pictures">{pictures}</div>{"<ul>" + lines + "</ul>" if lines else ""}</article>')


STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:12px;
color:#222;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}h3{font-size:1em;margin:0 0 .4em;
word-break:break-all}
.partial{background:#fff3cd;border:1px solid #e0b800;padding:8px 12px;border-radius:6px;font-weight:600}
.scroll{overflow-x:auto}table{border-collapse:collapse;min-width:50%}
th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable thead th[aria-sort=descending]::after{content:" \\25BC"}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.5em 0}
dl.facts dt{color:#666}dl.facts dd{margin:0;word-break:break-all}
.chart{width:100%;max-width:760px;height:auto;font-size:12px}
.legend .key{display:inline-block;width:12px;height:12px;margin:0 4px 0 8px;vertical-align:middle}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.card{border:1px solid #ddd;border-radius:8px;padding:10px}
.card dl{display:flex;flex-wrap:wrap;gap:2px 14px;margin:0 0 6px}.card dt{color:#666}.card dd{margin:0}
.pictures{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:6px}figure{margin:0}
figure img{width:100%;image-rendering:pixelated;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.note{color:#666;margin:.2em 0}
.card ul{margin:.4em 0 0;padding-left:1.2em;font-size:13px}
@media (max-width:600px){body{font-size:14px;padding:8px}.cards{grid-template-columns:1fr}}
"""

# Click a column heading to sort by it; numbers sort by their exact data-value, the rest as text.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(table){
  table.querySelectorAll("thead th").forEach(function(th, column){
    th.addEventListener("click", function(){
      var up = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function(h){h.removeAttribute("aria-sort");});
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row){var c = row.cells[column], v = c.getAttribute("data-value");
        return v === null ? c.textContent : (v === "" ? -Infinity : parseFloat(v));}
      rows.sort(function(a, b){var x = key(a), y = key(b);
        var order = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return up ? order : -order;});
      rows.forEach(function(row){body.appendChild(row);});
    });
  });
});
"""


def render_page(page: Page) -> str:
    """The whole page as one HTML string."""
    facts = "".join(f"<dt>{_escape(k)}</dt><dd>{_escape(v)}</dd>" for k, v in page.facts)
    banner = ('<p class="partial" id="partial">Partial report: the run was interrupted; the figures cover the '
              "items done before it stopped.</p>") if page.partial else ""
    blocks = "".join(chart_svg(b) if isinstance(b, BarChart) else table_html(b) for b in page.blocks)
    cards = "".join(card_html(card) for card in page.worst)
    worst = (f'<section><h2>{_escape(page.worst_title)}</h2><div class="cards">{cards}</div></section>'
             if page.worst else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_escape(page.title)}</title><style>{STYLE}</style></head>"
            f'<body data-partial="{str(page.partial).lower()}"><h1>{_escape(page.title)}</h1>{banner}'
            f'<dl class="facts">{facts}</dl>{table_html(page.headline)}{blocks}{worst}'
            f"<script>{SCRIPT}</script></body></html>\n")


def write_page(path: Union[str, Path], page: Page) -> None:
    """Write the page to `path` (a path or a URL) atomically (a reader never sees half a page)."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(render_page(page))


def histogram(values: Sequence[float], bins: int = 10) -> tuple[list[str], list[Optional[float]]]:
    """(bin labels, counts) of `values` over `bins` equal bins from 0 to their largest (a chart's input)."""
    numbers = [v for v in values if v is not None and math.isfinite(v)]
    if not numbers:
        return [], []
    top = max(max(numbers), 1e-9)
    counts, edges = np.histogram(numbers, bins=bins, range=(0.0, top))
    return [f"{a:.3g}–{b:.3g}" for a, b in zip(edges, edges[1:])], [float(c) for c in counts]
