"""A rendered report, checked in a real headless browser (Chromium).

:func:`check_page` opens an HTML file in headless Chromium at a laptop's window width and
measures, once the page has loaded: the page's width and the width of its content, every
image (loaded and decoded: ``naturalWidth > 0``), every table (its width against the
content's), and every number cell (``td.num``, see :mod:`snn.render`) whose text wraps
onto a second line. :func:`problems` turns that into a list of sentences (empty: the page
is fine); :func:`screenshot` saves what a reader sees first, as a small PNG.

The browser is driven by its command line only (``--dump-dom`` after a probe script has
written its measurements into the page, ``--screenshot``): no driver, no download. The
page is probed through a copy with a ``<base>`` pointing at the original's folder, so
relative links and images resolve as they would for the original, which is not touched.

Standard library only (PIL, when installed, shrinks the screenshots).
"""
from __future__ import annotations

import html as _html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from snn.errors import SnnError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH = 1280
"""The window width pages are checked at (CSS pixels): a common laptop screen."""

PROBE = """<script>
window.addEventListener('load', () => {
  const body = document.body, cs = getComputedStyle(body);
  const content = body.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const lines = el => { const r = document.createRange(); r.selectNodeContents(el);
    return new Set([...r.getClientRects()].map(q => Math.round(q.top))).size; };
  const out = {
    title: document.title, viewport: document.documentElement.clientWidth,
    page_width: document.documentElement.scrollWidth, content_width: content,
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, natural_width: i.naturalWidth})),
    tables: [...document.querySelectorAll('table')].map((t, k) => ({index: k,
      head: [...t.querySelectorAll('th')].slice(0, 3).map(h => h.textContent).join(' | '),
      width: Math.ceil(t.getBoundingClientRect().width)})),
    wrapped_numbers: [...document.querySelectorAll('td.num')].filter(td => td.textContent.trim() && lines(td) > 1)
      .map(td => td.textContent)};
  const pre = document.createElement('pre');
  pre.id = 'snn-browser-check';
  pre.textContent = JSON.stringify(out);
  body.appendChild(pre);
});
</script>"""


def find_browser() -> str | None:
    """The path of a Chromium-family browser on PATH (``$SNN_BROWSER`` first), or None."""
    for name in ((os.environ["SNN_BROWSER"],) if os.environ.get("SNN_BROWSER") else ()) + BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser(browser: str | None) -> str:
    path = browser or find_browser()
    if path is None:
        raise SnnError(f"no headless browser found (tried {', '.join(BROWSERS)}; set SNN_BROWSER): "
                       "install one, e.g. `apt-get install chromium`")
    return path


def _run(browser: str, args: list[str], timeout: float, height: int = 900) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", f"--window-size={WIDTH},{height}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SnnError(f"{Path(browser).name} did not finish in {timeout:.0f} s: {' '.join(cmd[-1:])}") from None


def _probe_copy(page: Path, folder: Path) -> Path:
    """A copy of ``page`` in ``folder`` with a <base> at the original's folder and the probe script."""
    src = page.read_text(encoding="utf-8")
    base = f'<base href="{page.parent.resolve().as_uri()}/">'
    src = re.sub(r"<head>", "<head>" + base, src, count=1) if "<head>" in src else base + src
    src = src.replace("</body>", PROBE + "</body>") if "</body>" in src else src + PROBE
    probe = folder / "probe.html"
    probe.write_text(src, encoding="utf-8")
    return probe


def check_page(path: str | Path, browser: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Load ``path`` in headless Chromium, ``WIDTH`` pixels wide, and measure it (see the
    module docstring); return the measurements: ``title``, ``viewport``, ``page_width``
    (the document's scroll width), ``content_width`` (the body's, padding excluded),
    ``images`` ([{alt, complete, natural_width}]), ``tables`` ([{index, head, width}]) and
    ``wrapped_numbers`` (the texts of number cells that wrap)."""
    page = Path(path)
    if not page.is_file():
        raise SnnError(f"no such page: {page}")
    exe = _browser(browser)
    with tempfile.TemporaryDirectory(prefix="snn-browser-") as tmp:
        probe = _probe_copy(page, Path(tmp))
        r = _run(exe, [f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000", "--dump-dom",
                       probe.as_uri()], timeout)
    m = re.search(r'<pre id="snn-browser-check">(.*?)</pre>', r.stdout, re.S)
    if m is None:
        raise SnnError(f"{Path(exe).name} rendered no measurements for {page} (exit code {r.returncode}): "
                       f"{r.stderr.strip()[-300:]}")
    return json.loads(_html.unescape(m.group(1)))


def problems(measured: dict[str, Any]) -> list[str]:
    """What is wrong with a page measured by :func:`check_page`: images that did not
    load, tables wider than the page's content, a page wider than the window, numbers
    wrapping inside cells. Empty when nothing is."""
    out = []
    for i, img in enumerate(measured["images"]):
        if not img["complete"] or img["natural_width"] <= 0:
            out.append(f"image {i} ({img['alt']!r}) did not load")
    for t in measured["tables"]:
        if t["width"] > measured["content_width"] + 1:
            out.append(f"table {t['index']} ({t['head']} ...) is {t['width']} px wide, wider than the page "
                       f"({measured['content_width']:.0f} px)")
    if measured["page_width"] > measured["viewport"]:
        out.append(f"the page is {measured['page_width']} px wide, wider than the window ({measured['viewport']} px)")
    out += [f"the number {n!r} wraps inside its cell" for n in measured["wrapped_numbers"]]
    return out


def screenshot(path: str | Path, png: str | Path, height: int = 1600, scale: float = 0.5,
               browser: str | None = None, timeout: float = 60.0) -> Path:
    """Save the top ``height`` pixels of the page at ``path``, ``WIDTH`` wide, as ``png``,
    shrunk by ``scale`` and reduced to a 256-colour palette when PIL is installed (small
    files for reference results)."""
    page = Path(path)
    if not page.is_file():
        raise SnnError(f"no such page: {page}")
    exe = _browser(browser)
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="snn-browser-") as tmp:
        shot = Path(tmp) / "shot.png"
        r = _run(exe, [f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000", f"--screenshot={shot}",
                       page.resolve().as_uri()], timeout, height)
        if not shot.is_file():
            raise SnnError(f"{Path(exe).name} saved no screenshot of {page} (exit code {r.returncode}): "
                           f"{r.stderr.strip()[-300:]}")
        try:
            from PIL import Image
        except ImportError:
            shutil.copyfile(shot, out)
            return out
        with Image.open(shot) as im:
            im = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
            im.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
    return out
