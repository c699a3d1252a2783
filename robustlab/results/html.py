"""report.html: the report as one self-contained page (inline CSS, figures as base64 PNG data
URIs, no script, no font, no URL outside the file), opened in a browser without a server.

It shows what report.md shows, from the same Report (the same cell texts), plus the figures and
what each raised sanity flag means (robustlab.results.flags)."""

from __future__ import annotations

import base64
import re
import struct
from html import escape
from pathlib import Path

from robustlab.results.compare import COMPARISON_HEADER, comparison_columns
from robustlab.results.flags import FLAG_MEANINGS, FLAGS_CAVEAT, flag_meaning
from robustlab.results.report import (
    SHADOWED_NOTE,
    WARN,
    Grid,
    Report,
    comparison_intro,
    comparisons_by_dataset,
    flagged_cells,
    grid_table,
    no_pairs_note,
)

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.5em; word-break: break-all; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f1f1f1; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafafa; }
td.flagged { background: #fff0c2; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
dt { font-family: monospace; font-weight: bold; margin-top: 0.5em; }
dd { margin-left: 1.5em; }
.note { color: #555; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _text(line: str) -> str:
    """Escaped text, with markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(line))


def _anchor(prefix: str, name: str) -> str:
    return prefix + "-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _table(
    header: list[str], rows: list[list[str]], classes: list[list[str]] | None = None, cls: str = ""
) -> str:
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in header)
    body = []
    for i, cells in enumerate(rows):
        tds = []
        for j, text in enumerate(cells):
            extra = (classes[i][j] if classes else "") or ""
            tds.append(f"<td{extra}>{escape(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    if data[:8] != PNG_MAGIC:
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def _image(path: Path, alt: str) -> str:
    data = path.read_bytes()
    width, height = png_size(data)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{escape(alt)}" width="{width}" height="{height}">'
        f"<figcaption>{escape(path.name)}</figcaption></figure>"
    )


def _grid_section(grid: Grid, figures: list[Path]) -> str:
    header, rows = grid_table(grid)
    classes = []
    for row in grid.rows:
        marks = ["", ""]
        for col in grid.cols:
            flags = (grid.cells.get((row, col)) or {}).get("sanity_flags") or []
            marks.append(f' class="flagged" title="{escape(", ".join(flags))}"' if flags else "")
        classes.append(marks)
    parts = [
        f'<section id="{_anchor("dataset", grid.dataset)}">',
        f"<h2>{escape(grid.dataset)}</h2>",
        _table(header, rows, classes, cls="grid"),
    ]
    flagged = flagged_cells(grid)
    if flagged:
        parts.append(f"<p>Sanity flags ({escape(FLAGS_CAVEAT)}; meanings below):</p><ul>")
        for row, col, flags in flagged:
            names = ", ".join(
                f'<a href="#{_anchor("flag", f)}"><code>{escape(f)}</code></a>' for f in flags
            )
            parts.append(f"<li>{WARN} {escape(row)} / {escape(col)}: {names}</li>")
        parts.append("</ul>")
    if grid.shadowed:
        parts.append(f'<p class="note">{_text(SHADOWED_NOTE.format(n=grid.shadowed))}</p>')
    for path in figures:
        kind = "eps curves" if path.name.startswith("eps_curve") else "heatmap"
        parts.append(_image(path, f"{kind} of {grid.dataset}"))
    parts.append("</section>")
    return "\n".join(parts)


def _comparison_section(report: Report) -> str:
    baseline = report.baseline or ""
    parts = [
        f'<section id="{_anchor("vs", baseline)}">',
        f"<h2>vs {escape(baseline)}</h2>",
        f"<p>{_text(comparison_intro(baseline))}</p>",
    ]
    for dataset, comparisons in comparisons_by_dataset(report.comparisons).items():
        parts.append(f"<h3>{escape(dataset)}</h3>")
        rows = [comparison_columns(c) for c in comparisons]
        parts.append(_table(COMPARISON_HEADER, rows, cls="comparison"))
    if not report.comparisons:
        parts.append(f"<p>{escape(no_pairs_note(baseline))}</p>")
    if report.problems:
        items = "".join(f"<li>not paired: {escape(p)}</li>" for p in report.problems)
        parts.append(f"<ul>{items}</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _flags_section(report: Report) -> str:
    raised = sorted({f for r in report.records for f in r.get("sanity_flags") or []})
    parts = ['<section id="flags">', "<h2>Sanity flags</h2>"]
    if raised:
        parts.append(f"<p>Raised in this report ({escape(FLAGS_CAVEAT)}):</p><dl>")
        for flag in raised:
            parts.append(
                f'<dt id="{_anchor("flag", flag)}">{escape(flag)}</dt>'
                f"<dd>{escape(flag_meaning(flag))}</dd>"
            )
        parts.append("</dl>")
    else:
        parts.append("<p>None raised.</p>")
    others = [f for f in FLAG_MEANINGS if f not in raised]
    parts.append("<details><summary>Every flag robustlab raises</summary><dl>")
    parts += [f"<dt>{escape(f)}</dt><dd>{escape(FLAG_MEANINGS[f])}</dd>" for f in others]
    parts.append("</dl></details></section>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The page of ``report``; figures are embedded from ``report.figures`` (written first)."""
    nav = " · ".join(
        f'<a href="#{_anchor("dataset", g.dataset)}">{escape(g.dataset)}</a>' for g in report.grids
    )
    if report.baseline:
        nav += f' · <a href="#{_anchor("vs", report.baseline)}">vs {escape(report.baseline)}</a>'
    nav += ' · <a href="#flags">sanity flags</a>'
    body = [
        f"<h1>{escape(report.title)}</h1>",
        *(f"<p>{_text(line)}</p>" for line in report.preamble()),
        f"<nav>{nav}</nav>",
        *(_grid_section(g, report.figures.get(g.dataset, [])) for g in report.grids),
    ]
    if report.baseline:
        body.append(_comparison_section(report))
    body.append(_flags_section(report))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(report.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
