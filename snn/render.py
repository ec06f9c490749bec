"""Documents as data: a list of blocks, rendered to Markdown, HTML or plain text.

Every report of the package (a run's ``report.md``/``report.html``, the energy report of
:class:`snn.energy.EnergyReport` and of ``snn energy``, comparisons) is assembled once as
blocks and rendered here, so a table or a section looks the same in every format. Blocks::

    ("h1" .. "h4", text)            heading
    ("p", text)                     paragraph
    ("pre", text)                   preformatted text
    ("ul", [item, ...])             bullet list
    ("table", headers, rows)        rows: lists of cells (str() of each cell is shown)
    ("img", file, alt, png)         a PNG figure: ``png`` (bytes) is embedded in the HTML;
                                    Markdown links ``file`` (a file beside the document;
                                    None: the figure is left out of Markdown and text)

Standard library only (the energy package renders with it, DESIGN.md's import arrows).
"""
from __future__ import annotations

import base64
import html as _html
from typing import Sequence

Block = tuple

STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em;"
         "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}"
         "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}")


def heading(level: int, text: str) -> Block:
    """A heading block of ``level`` (1 to 4)."""
    return (f"h{level}", text)


def _is_heading(kind: str) -> bool:
    return len(kind) == 2 and kind[0] == "h" and kind[1].isdigit()


def markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown (``|`` in table cells escaped)."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    out = []
    for b in blocks:
        kind = b[0]
        if _is_heading(kind):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "pre":
            out.append("```\n" + b[1].rstrip() + "\n```")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif kind == "table":
            out.append("\n".join(["| " + " | ".join(map(esc, b[1])) + " |", "|" + "---|" * len(b[1])]
                                 + ["| " + " | ".join(map(esc, r)) + " |" for r in b[2]]))
        elif kind == "img" and b[1]:
            out.append(f"![{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


def html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (figures embedded as base64 PNG)."""
    esc = _html.escape
    body = []
    for b in blocks:
        kind = b[0]
        if _is_heading(kind):
            body.append(f"<{kind}>{esc(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{esc(b[1])}</p>")
        elif kind == "pre":
            body.append(f"<pre>{esc(b[1])}</pre>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{esc(str(item))}</li>" for item in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{esc(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(b[3]).decode()
            body.append(f'<figure><img alt="{esc(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(b[2])}</figcaption></figure>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def text(blocks: Sequence[Block]) -> str:
    """The blocks as plain text for a terminal: tables in right-aligned columns."""
    out = []
    for b in blocks:
        kind = b[0]
        if _is_heading(kind):
            out.append(b[1] + "\n" + ("=" if kind == "h1" else "-") * len(b[1]))
        elif kind in ("p", "pre"):
            out.append(b[1].rstrip())
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif kind == "table":
            cells = [[str(c) for c in r] for r in [b[1], *b[2]]]
            w = [max(len(c) for c in col) for col in zip(*cells)]
            lines = ["  ".join(c.rjust(n) for c, n in zip(r, w)) for r in cells]
            out.append("\n".join([lines[0], "  ".join("-" * n for n in w), *lines[1:]]))
    return "\n\n".join(out)
