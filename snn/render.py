"""Documents as data: a list of blocks, rendered to Markdown, HTML or plain text.

Every report of the package (a run's ``report.md``/``report.html``, the energy report of
:class:`snn.energy.EnergyReport` and of ``snn energy``, comparisons, life cycles) is
assembled once as blocks and rendered here, so a table or a section looks the same in
every format. Blocks::

    ("h1" .. "h4", text)                heading
    ("p", text)                         paragraph
    ("pre", text)                       preformatted text (shown as is)
    ("ul", [item, ...])                 bullet list
    ("table", headers, rows[, formats]) rows: lists of cells; formats: one per column (below)
    ("img", file, alt, png)             a PNG figure: ``png`` (bytes) is embedded in the HTML;
                                        Markdown links ``file`` (a file beside the document;
                                        None: the figure is left out of Markdown and text)

Inline: text in paragraphs, list items and cells may hold ```code``` spans (``<code>`` in
HTML, kept in Markdown, backticks dropped in plain text). A paragraph, a list item or a
text cell may also be a :class:`Link` or a list of pieces (strings and links).

Column formats (one number format per column; ``None`` is shown as ``–``; a cell
``(lo, hi)`` is a range, ``"lo to hi unit"``):

* ``"text"`` (the default): ``str()`` of the cell;
* ``"value"``: numbers already written out with their units (``str()``, aligned and
  kept on one line like every number column);
* ``"count"``: thousands separators, one number of decimals for the whole column (none
  when every value is whole or the largest is 100 or more);
* ``"number"``: fixed decimals for the whole column, chosen so that its smallest non-zero
  value keeps three significant digits; scientific (``1.23e-05``) for the whole column when
  its values span below 0.001 or above 10^6;
* ``"percent"``: a fraction shown as ``98.74%``;
* ``"seconds"``: ``2.54 s`` (two decimals: stage timings that add up);
* any other string is a unit with SI prefixes and three significant digits, per cell:
  ``"J"`` gives ``542 nJ``, ``343 µJ``, ``105 mJ`` (:func:`si`).

Standard library only (the energy package renders with it, DESIGN.md's import arrows).
"""
from __future__ import annotations

import base64
import html as _html
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

Block = tuple

NONE = "–"
PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"),
            (1e-12, "p"), (1e-15, "f"))

STYLE = ("body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;"
         "line-height:1.45;color:#222;max-width:72em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0;font-size:.95em;font-variant-numeric:tabular-nums}"
         "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
         "th{background:#f0f0f0;font-weight:600}th.num{text-align:right}"
         "td.num{text-align:right;white-space:nowrap}td.nw{white-space:nowrap}"
         "tbody tr:nth-child(even){background:#fafafa}"
         "code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;background:#f2f2f2;"
         "padding:0 .2em;border-radius:3px}"
         "img{max-width:100%;height:auto}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}"
         "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}")


@dataclass(frozen=True)
class Link:
    """A hyperlink in a list item or a table cell: ``href`` relative to the document."""

    text: str
    href: str

    def __str__(self) -> str:
        return self.text


def heading(level: int, text: str) -> Block:
    """A heading block of ``level`` (1 to 4)."""
    return (f"h{level}", text)


def _is_heading(kind: str) -> bool:
    return len(kind) == 2 and kind[0] == "h" and kind[1].isdigit()


# --------------------------------------------------------------------------- numbers
def _sig3(x: float) -> str:
    """``x`` (|x| in [1, 1000) or 0) with three significant digits, never scientific."""
    a = abs(x)
    return f"{x:.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}"


def _prefix(v: float) -> tuple[float, str]:
    """The SI prefix (factor, symbol) for ``v`` rounded to three significant digits."""
    a = abs(float(f"{v:.3g}"))
    for f, p in PREFIXES:
        if a >= f:
            return f, p
    return PREFIXES[-1]


def si(v: float | None, unit: str) -> str:
    """``v`` in ``unit`` with an SI prefix and three significant digits: ``si(5.42e-7, "J")``
    is ``"542 nJ"``; ``si(0.105, "J")`` is ``"105 mJ"``; None is ``"–"``."""
    if v is None:
        return NONE
    v = float(v)
    if v == 0 or not math.isfinite(v):
        return f"{v:g} {unit}".rstrip()
    f, p = _prefix(v)
    return f"{_sig3(float(f'{v:.3g}') / f)} {p}{unit}".rstrip()


def si_range(lo: float, hi: float, unit: str) -> str:
    """A range in one prefix (the larger bound's): ``"479 to 492 µJ"``, ``"0.117 to 1.36 J"``."""
    f, p = _prefix(max(abs(float(lo)), abs(float(hi))) or 1.0)
    a, b = float(lo) / f, float(hi) / f
    d = _decimals(b)
    return f"{a:.{d}f} to {b:.{d}f} {p}{unit}".rstrip()


def _decimals(x: float) -> int:
    """Decimals that keep three significant digits of ``x`` (0 for whole numbers from 100)."""
    a = abs(x)
    return 0 if a == 0 or a >= 100 else min(6, 2 - math.floor(math.log10(a)))


def _is_range(c: Any) -> bool:
    return isinstance(c, tuple) and len(c) == 2


def _values(cells: Sequence[Any]) -> list[float]:
    out = []
    for c in cells:
        if _is_range(c):
            out += [float(c[0]), float(c[1])]
        elif c is not None and not isinstance(c, str):
            out.append(float(c))
    return out


def format_column(fmt: str, cells: Sequence[Any]) -> list[Any]:
    """The cells of one column as shown (``str``, or a :class:`Link` kept as is), in the
    column's format (see the module docstring)."""
    if fmt in ("text", "value"):
        return [NONE if c is None else c if isinstance(c, (Link, list)) else str(c) for c in cells]
    vals = _values(cells)
    if fmt == "percent":
        one = lambda v: f"{100 * float(v):.2f}%"  # noqa: E731
    elif fmt == "seconds":
        one = lambda v: f"{float(v):.2f} s"  # noqa: E731
    elif fmt == "count":
        big = max((abs(v) for v in vals), default=0.0) >= 100
        d = 0 if big or all(float(v).is_integer() for v in vals) else min(3, max(
            (_decimals(v) for v in vals if v), default=0))
        one = lambda v: f"{float(v):,.{d}f}"  # noqa: E731
    elif fmt == "number":
        nz = [abs(v) for v in vals if v]
        if nz and (min(nz) < 1e-3 or max(nz) >= 1e6):
            one = lambda v: f"{float(v):.2e}"  # noqa: E731
        else:
            d = max((_decimals(v) for v in nz), default=0)
            one = lambda v: f"{float(v):,.{d}f}"  # noqa: E731
    else:  # a unit, SI prefixes per cell
        return [NONE if c is None else c if isinstance(c, str) else si_range(c[0], c[1], fmt) if _is_range(c)
                else si(c, fmt) for c in cells]
    return [NONE if c is None else c if isinstance(c, str) else f"{one(c[0])} to {one(c[1])}" if _is_range(c)
            else one(c) for c in cells]


def _table(b: Block) -> tuple[list[str], list[list[Any]], list[bool]]:
    """Headers, the shown cells (rows) and, per column, whether it holds numbers."""
    headers, rows = list(b[1]), [list(r) for r in b[2]]
    fmts = list(b[3]) if len(b) > 3 and b[3] is not None else ["text"] * len(headers)
    if len(fmts) != len(headers) or any(len(r) != len(headers) for r in rows):
        raise ValueError(f"table {headers}: every row and the formats need {len(headers)} cells")
    cols = [format_column(f, [r[i] for r in rows]) for i, f in enumerate(fmts)]
    return headers, [list(r) for r in zip(*cols)] if rows else [], [f != "text" for f in fmts]


def split_table(b: Block, keep: int = 1, columns: int = 6) -> list[Block]:
    """A table with many columns as several tables that fit a page: each repeats the first
    ``keep`` columns (the row names) and holds at most ``columns`` of the others."""
    head, rows = list(b[1]), [list(r) for r in b[2]]
    fmts = list(b[3]) if len(b) > 3 and b[3] is not None else ["text"] * len(head)
    if len(head) <= keep + columns:
        return [b]
    out = []
    for i in range(keep, len(head), columns):
        sl = slice(i, i + columns)
        out.append(("table", head[:keep] + head[sl], [r[:keep] + r[sl] for r in rows], fmts[:keep] + fmts[sl]))
    return out


# --------------------------------------------------------------------------- Markdown
def _md(c: Any) -> str:
    if isinstance(c, list):
        return "".join(map(_md, c))
    if isinstance(c, Link):
        return f"[{c.text}](<{c.href}>)" if " " in c.href else f"[{c.text}]({c.href})"
    return str(c)


def markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown (``|`` in table cells escaped)."""
    esc = lambda c: _md(c).replace("|", "\\|")  # noqa: E731
    out = []
    for b in blocks:
        kind = b[0]
        if _is_heading(kind):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(_md(b[1]))
        elif kind == "pre":
            out.append("```\n" + b[1].rstrip() + "\n```")
        elif kind == "ul":
            out.append("\n".join(f"- {_md(item)}" for item in b[1]))
        elif kind == "table":
            head, rows, num = _table(b)
            out.append("\n".join(["| " + " | ".join(map(esc, head)) + " |",
                                  "|" + "".join("---:|" if n else "---|" for n in num)]
                                 + ["| " + " | ".join(map(esc, r)) + " |" for r in rows]))
        elif kind == "img" and b[1]:
            out.append(f"![{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


# --------------------------------------------------------------------------- HTML
_CODE = re.compile(r"`([^`]+)`")


def _inline(c: Any) -> str:
    """Escaped HTML of a text (```code``` spans as <code>), a :class:`Link` or a list of them."""
    if isinstance(c, list):
        return "".join(map(_inline, c))
    if isinstance(c, Link):
        return f'<a href="{_html.escape(c.href)}">{_inline(c.text)}</a>'
    return _CODE.sub(r"<code>\1</code>", _html.escape(str(c), quote=False))


def _word(c: Any) -> str:
    """The class of a text cell that is one short word (``45nm-fp32``): kept on one line."""
    return ' class="nw"' if isinstance(c, str) and len(c) <= 24 and not any(ch.isspace() for ch in c) else ""


def html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (figures embedded as base64 PNG)."""
    esc = _html.escape
    body = []
    for b in blocks:
        kind = b[0]
        if _is_heading(kind):
            body.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "pre":
            body.append(f"<pre>{esc(b[1])}</pre>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in b[1]) + "</ul>")
        elif kind == "table":
            head, rows, num = _table(b)
            cls = [' class="num"' if n else "" for n in num]
            th = "".join(f"<th{c}>{_inline(h)}</th>" for h, c in zip(head, cls))
            trs = "".join("<tr>" + "".join(f"<td{c or _word(x)}>{_inline(x)}</td>" for x, c in zip(r, cls)) + "</tr>"
                          for r in rows)
            body.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(b[3]).decode()
            body.append(f'<figure><img alt="{esc(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline(b[2])}</figcaption></figure>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# --------------------------------------------------------------------------- text
def _plain(c: Any) -> str:
    if isinstance(c, list):
        return "".join(map(_plain, c))
    if isinstance(c, Link):
        return c.text if c.text == c.href else f"{c.text} ({c.href})"
    return str(c).replace("`", "")


def text(blocks: Sequence[Block]) -> str:
    """The blocks as plain text for a terminal: tables in columns (numbers right-aligned)."""
    out = []
    for b in blocks:
        kind = b[0]
        if _is_heading(kind):
            out.append(b[1] + "\n" + ("=" if kind == "h1" else "-") * len(b[1]))
        elif kind in ("p", "pre"):
            out.append(b[1].rstrip() if kind == "pre" else _plain(b[1]).rstrip())
        elif kind == "ul":
            out.append("\n".join(f"- {_plain(item)}" for item in b[1]))
        elif kind == "table":
            head, rows, num = _table(b)
            cells = [[_plain(c) for c in r] for r in [head, *rows]]
            w = [max(len(c) for c in col) for col in zip(*cells)]
            lines = ["  ".join((c.rjust(n) if r else c.ljust(n)) for c, n, r in zip(row, w, num)).rstrip()
                     for row in cells]
            out.append("\n".join([lines[0], "  ".join("-" * n for n in w), *lines[1:]]))
    return "\n\n".join(out)
