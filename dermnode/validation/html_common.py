"""Building blocks of the HTML report: the style sheet (screen and A4/Letter print), cell formatting, tables."""

from __future__ import annotations

import base64
from html import escape

from dermnode.validation.minimum import TOO_SMALL

#: Tables stay within the narrower of A4 and Letter (210 mm less 2 x 12 mm margins, about 700 CSS px;
#: the paper is the reader's): numbers do not wrap, text cells do, and the print font is smaller.
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 12px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #ccc; padding-bottom: 3px; margin-top: 32px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; vertical-align: top; }
th { background: #eef2f6; white-space: normal; } td:first-child, th:first-child { text-align: left; }
td.text { white-space: normal; text-align: left; }
td.hash, .hash { font-family: monospace; word-break: break-all; white-space: normal; text-align: left; font-size: 0.85em; }
td.hash { min-width: 8em; }
tr.overall td { font-weight: bold; background: #f7f7f7; }
.note { color: #555; font-size: 13px; } .small { color: #777; font-size: 0.85em; white-space: normal; }
.warnings { border: 2px solid #b03a2e; background: #fdecea; padding: 6px 12px; margin: 12px 0; }
.warnings li { margin: 4px 0; font-weight: bold; color: #7b241c; }
img { max-width: 100%; border: 1px solid #eee; margin: 6px 0; } td img { margin: 0; display: block; }
@page { margin: 12mm; }
@media print {
  body { margin: 0; max-width: none; padding: 0; font-size: 11px; }
  h2 { margin-top: 18px; break-after: avoid; } table { font-size: 9px; } th, td { padding: 1px 3px; }
  tr, img { break-inside: avoid; } .note { font-size: 10px; } details > table { display: table; }
}
"""


def f(value: object, digits: int = 3) -> str:
    """A cell: numbers to ``digits`` places, booleans as yes/no, None as a dash, text escaped."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def figure(value: float | None, note: str | None, digits: int = 3) -> str:
    """A metric cell: the number, or "n too small" where the small-numbers rule withheld it."""
    if value is None and (note or "").startswith(TOO_SMALL):
        return f'<span class="small">{TOO_SMALL}</span>'
    return f(value, digits)


def with_ci(entry: dict) -> str:
    """AUROC with its bootstrap interval, or "n too small"."""
    text = figure(entry.get("auroc"), entry.get("note"))
    if entry.get("auroc") is not None and entry.get("ci_low") is not None:
        text += f" ({entry['ci_low']:.3f}&ndash;{entry['ci_high']:.3f})"
    return text


def table(header: list[str], rows: list[list[str]], classes: list[str] | None = None,
          cell_classes: dict[int, str] | None = None) -> str:  # fmt: skip
    """A table; ``classes`` per row (e.g. "overall"), ``cell_classes`` per column index (e.g. "text")."""
    head = "".join(f"<th>{h}</th>" for h in header)
    css = classes or [""] * len(rows)
    cell_css = cell_classes or {}

    def cell(i: int, content: str) -> str:
        return f'<td class="{cell_css[i]}">{content}</td>' if i in cell_css else f"<td>{content}</td>"

    body = "".join(
        (f'<tr class="{c}">' if c else "<tr>") + "".join(cell(i, content) for i, content in enumerate(row)) + "</tr>"
        for row, c in zip(rows, css)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png(data: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
