"""Reports people want to read (issue 16, item 4).

Fast: the renderer's formats, and the HTML of real runs (a small CNN with a max-pool on
the digits), parsed with html.parser: lists inside lists, no literal backticks, human
headings, units (percent, SI-prefixed joules, ranges "lo to hi J"), one number format
per column, the run's name in the title, timing rows, links that resolve to files.
Slow: the quickstart, an MNIST LeNet-5 and a comparison report in a real headless
Chromium: it renders, every image loads, no table is wider than the page, no number
wraps in its cell (skipped, with the reason, where no browser is installed).
"""
from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch.nn as nn

from snn import browser, render
from snn.render import Link
from snn.report import compare_runs
from snn.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]


class TinyCNN(nn.Module):
    """conv 3x3 -> ReLU -> max-pool 2 -> linear: a max-pool of spikes in the SNN."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def _cfg(**sim):
    return {"name": "tiny", "threads": 1, "data": {"name": "digits", "test_limit": 100},
            "model": {"name": "tests.test_reports:TinyCNN"}, "train": {"epochs": 3, "lr": 0.01},
            "sim": {"timesteps": 8, **sim}, "energy": {"hardware": ["45nm-fp32", "loihi", "gpu-h100"]}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the small CNN (T = 8 and 16) and their comparison."""
    tmp = tmp_path_factory.mktemp("reports")
    a = run_experiment(_cfg(), results_dir=tmp / "results", progress=False, log=lambda m: None)
    b = run_experiment(_cfg(timesteps=16), results_dir=tmp / "results", progress=False, log=lambda m: None)
    return a, b, compare_runs([a.path, b.path], tmp / "compare", title="T = 8 vs 16")


# --------------------------------------------------------------------------- a page, parsed
class Page(HTMLParser):
    """The parts of an HTML page the tests look at: title, the parent of every list item,
    text outside <pre>, links, headings, and the tables (headers, cells, cell classes)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path, self.stack, self.title = path, [], ""
        self.li_parents: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []
        self.headings: list[str] = []
        self.tables: list[dict] = []
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "li":
            self.li_parents.append(self.stack[-1] if self.stack else "")
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag == "table":
            self.tables.append({"head": [], "rows": [], "num": []})
        if tag == "tr" and self.tables and "tbody" in self.stack:
            self.tables[-1]["rows"].append([])
        if tag in ("td", "th"):
            t = self.tables[-1]
            if tag == "th":
                t["head"].append("")
                t["num"].append("num" in a.get("class", ""))
            else:
                t["rows"][-1].append("")
        if tag not in ("img", "meta", "br", "base"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if "title" in self.stack:
            self.title += data
        if "pre" not in self.stack and "style" not in self.stack and "script" not in self.stack:
            self.text.append(data)
        if self.stack and self.stack[-1] in ("h1", "h2", "h3", "h4"):
            self.headings.append(data)
        if "th" in self.stack:
            self.tables[-1]["head"][-1] += data
        elif "td" in self.stack:
            self.tables[-1]["rows"][-1][-1] += data

    def table(self, first_header: str) -> dict:
        hits = [t for t in self.tables if t["head"] and t["head"][0] == first_header]
        assert hits, f"{self.path.name}: no table headed {first_header!r}"
        return hits[0]

    def column(self, t: dict, header: str) -> list[str]:
        i = t["head"].index(header)
        return [r[i] for r in t["rows"]]


def _pages(runs) -> list[Path]:
    a, _, cmp = runs
    return [a.path / "report.html", a.path / "energy.html", cmp / "compare.html"]


SI_J = re.compile(r"^\d+(\.\d+)? [kmµnpf]?J$")


def _shape(cell: str) -> str:
    """The number format of a shown number: scientific, percent, SI (with its unit), a
    range, or fixed with n decimals."""
    if " to " in cell:
        return "range " + cell.split()[-1][-1]
    if re.fullmatch(r"-?\d\.\d+e[+-]\d+", cell):
        return "scientific"
    if cell.endswith("%"):
        return "percent %d" % len(cell.rstrip("%").partition(".")[2])
    m = re.fullmatch(r"-?[\d,.]+ ([kMGTmµnpf]?)([A-Za-z/]+)", cell)
    if m:
        return "SI " + m.group(2)
    assert re.fullmatch(r"-?[\d,]+(\.\d+)?", cell), f"not a number: {cell!r}"
    return "fixed %d" % len(cell.partition(".")[2])


# --------------------------------------------------------------------------- the renderer
def test_formats_one_per_column():
    assert render.si(5.42e-7, "J") == "542 nJ" and render.si(3.43e-4, "J") == "343 µJ"
    assert render.si(0.105, "J") == "105 mJ" and render.si(999.6e-9, "J") == "1.00 µJ"
    assert render.si(None, "J") == "–"
    assert render.si_range(1.14e-5, 2.1e-5, "J") == "11.4 to 21.0 µJ"
    assert render.format_column("count", [58612.3, 8192, 0.0]) == ["58,612", "8,192", "0"]
    assert render.format_column("count", [8.5, 2.25]) == ["8.50", "2.25"]
    assert render.format_column("number", [0.463, 0.0374, None]) == ["0.4630", "0.0374", "–"]
    assert render.format_column("number", [0.463, 1.2e-5]) == ["4.63e-01", "1.20e-05"]  # all scientific, not mixed
    assert render.format_column("percent", [0.9874, (0.5, 0.625)]) == ["98.74%", "50.00% to 62.50%"]
    assert render.format_column("J", [(1.14e-5, 2.1e-5)]) == ["11.4 to 21.0 µJ"]


def test_a_wide_table_is_split_keeping_its_row_names():
    wide = ("table", ["node"] + [f"p{i}" for i in range(8)], [["a"] + list(range(8))], ["text"] + ["count"] * 8)
    parts = render.split_table(wide, keep=1, columns=3)
    assert [p[1] for p in parts] == [["node", "p0", "p1", "p2"], ["node", "p3", "p4", "p5"], ["node", "p6", "p7"]]
    assert parts[2][2] == [["a", 6, 7]] and parts[2][3] == ["text", "count", "count"]
    assert render.split_table(wide, columns=8) == [wide]


def test_links_lists_and_code_in_every_format():
    blocks = [("p", ["see ", Link("the data", "energy.json"), " and `e_mac`"]),
              ("ul", [Link("energy.html", "energy.html"), "a `key`"]),
              ("table", ["file", "J"], [[Link("a b.png", "a b.png"), 1.5e-6], ["x", None]], ["text", "J"])]
    page = render.html(blocks, "t")
    assert '<a href="energy.json">the data</a>' in page and "<code>e_mac</code>" in page and "`" not in page
    assert '<ul><li><a href="energy.html">energy.html</a></li><li>a <code>key</code></li></ul>' in page
    assert '<td class="num">1.50 µJ</td>' in page and '<th class="num">J</th>' in page
    md = render.markdown(blocks)
    assert "[the data](energy.json)" in md and "[a b.png](<a b.png>)" in md and "|---|---:|" in md
    txt = render.text(blocks)
    assert "the data (energy.json)" in txt and "`" not in txt and "1.50 µJ" in txt
    with pytest.raises(ValueError, match="2 cells"):
        render.html([("table", ["a", "b"], [["only one"]])], "t")


# --------------------------------------------------------------------------- real reports, parsed
def test_lists_are_lists_and_no_literal_backticks(runs):
    assert Page(runs[0].path / "report.html").li_parents  # the assumptions at least
    for path in _pages(runs):
        page = Page(path)
        assert set(page.li_parents) <= {"ul", "ol"}, path.name
        assert not any("`" in t for t in page.text), path.name


def test_the_title_names_the_run_not_its_temporary_folder(runs):
    a, b, _ = runs
    for r in (a, b):
        title = Page(r.path / "report.html").title
        assert title == f"tiny: run {r.path.name}" and ".partial" not in title


def test_links_reach_every_artefact_and_resolve(runs):
    a, _, cmp = runs
    page = Page(a.path / "report.html")
    files = {p.name for p in a.path.iterdir()}
    assert {"energy.html", "energy.json", "summary.json", "results.h5", "config.yaml", "network.h5"} <= files
    assert files <= set(page.links), files - set(page.links)
    for path in _pages(runs):
        for href in Page(path).links:
            if not href.startswith(("data:", "http:", "https:", "#")):
                assert (path.parent / href).is_file(), f"{path.name} links {href}, which does not exist"
    assert "energy_compare.json" in Page(cmp / "compare.html").links


def test_headings_are_names_not_keys(runs):
    for path in _pages(runs):
        page = Page(path)
        heads = [h for t in page.tables for h in t["head"]]
        assert not [h for h in heads if "_" in h], path.name  # raw keys: input_macs, train_acc, ...
    page = Page(runs[0].path / "report.html")
    assert "Firing rates of the neuron layers" in page.headings and "Per-layer firing rates" not in page.headings


def test_units_percent_si_joules_and_ranges(runs):
    a, _, cmp = runs
    page = Page(a.path / "report.html")
    assert all(c.endswith("%") for c in page.column(page.table("network"), "test accuracy"))
    assert all(c.endswith("%") for c in page.table("T")["rows"][0][1:])
    energy = page.table("profile")
    for h in ("ANN dynamic", "ANN total", "SNN dynamic", "SNN total"):
        assert all(c == "–" or SI_J.match(c) for c in page.column(energy, h)), h
    ranges = [c for c in page.column(energy, "SNN range (basis)") if c != "–"]
    assert ranges and all(re.fullmatch(r"\d+(\.\d+)? to \d+(\.\d+)? [kmµnpf]?J", c) for c in ranges), ranges
    per_step = [t for t in page.tables if t["head"][:2] == ["T", "accuracy"]][0]
    assert all(c.endswith("%") for c in page.column(per_step, "accuracy"))
    cmp_page = Page(cmp / "compare.html")
    assert all(c.endswith("%") for c in cmp_page.column(cmp_page.table("report"), "accuracy"))
    assert not any(re.search(r"\de-\d+-\d", t) for t in page.text)  # no "1.14e-05-2.1e-05"


def test_one_number_format_per_column(runs):
    for path in _pages(runs):
        for t in Page(path).tables:
            if t["head"][0] == "constant":  # a profile's constants: one unit per row, by design
                continue
            for i, num in enumerate(t["num"]):
                cells = [r[i] for r in t["rows"] if r[i] != "–"]
                if num and cells:
                    shapes = {_shape(c) for c in cells}
                    assert len(shapes) == 1, f"{path.name} {t['head'][i]!r}: {shapes} in {cells}"


def test_timings_include_report_and_total(runs):
    a, _, _ = runs
    page = Page(a.path / "report.html")
    stages = page.column(page.table("stage"), "stage")
    assert stages[-2:] == ["report", "total"] and {"data", "simulate"} <= set(stages)
    assert list(a.summary["timings_s"]) == stages


def test_firing_rates_show_neuron_layers_not_max_pools(runs):
    a, _, _ = runs
    page = Page(a.path / "report.html")
    layers = page.column(page.table("layer"), "layer")
    kinds = {r["node"]: r["kind"] for r in a.data.energy["layers"]}
    assert layers and all(kinds[n] == "if" for n in layers)
    pools = [n for n in a.data.spikes if kinds[n].startswith("maxpool")]
    assert pools and not set(pools) & set(layers)


# --------------------------------------------------------------------------- a real browser
BROWSER = browser.find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium on PATH (apt-get install chromium; "
                                                           "or set SNN_BROWSER): the reports' browser check is skipped")


def _reference_runs(tmp: Path) -> dict[str, Path]:
    """The README's quick start, MNIST LeNet-5 (500 test images) and a comparison of quick
    start variants, rendered from real runs."""
    out = {}
    qs = run_experiment(ROOT / "experiments" / "quickstart.yaml", results_dir=tmp, progress=False, log=lambda m: None)
    out["quickstart"] = qs.path / "report.html"
    out["quickstart energy"] = qs.path / "energy.html"
    other = run_experiment(ROOT / "experiments" / "quickstart.yaml", ["sim.timesteps=8", "convert.method=max"],
                           results_dir=tmp, progress=False, log=lambda m: None)
    out["compare"] = compare_runs([qs.path, other.path], tmp / "compare") / "compare.html"
    mnist = Path(os.environ.get("SNN_DATA", Path.home() / ".cache" / "snn" / "data")) / "mnist"
    if mnist.is_dir():
        lenet = run_experiment(ROOT / "experiments" / "mnist_lenet.yaml", ["data.test_limit=500"], results_dir=tmp,
                               progress=False, log=lambda m: None)
        out["mnist lenet5"] = lenet.path / "report.html"
    return out


@pytest.mark.slow
@needs_browser
def test_reports_in_a_real_browser(tmp_path):
    pages = _reference_runs(tmp_path)
    for name, page in pages.items():
        measured = browser.check_page(page, BROWSER)
        assert measured["images"] and measured["tables"], name
        assert browser.problems(measured) == [], name
    if "mnist lenet5" not in pages:
        pytest.skip("MNIST is not under $SNN_DATA/mnist (snn data download mnist): the quick start and comparison "
                    "reports passed, the LeNet-5 report was not checked")


@pytest.mark.slow
@needs_browser
def test_the_browser_check_sees_a_bad_page(tmp_path):
    """The check can fail: a table wider than the page, a broken image, a wrapping number."""
    wide = ("table", [f"column {i}" for i in range(30)], [[f"{i:,}" * 3 for i in range(30)]], ["count"] * 30)
    page = tmp_path / "bad.html"
    page.write_text(render.html([wide], "bad").replace(
        "</body>", '<img alt="missing" src="missing.png"><table><tr><td class="num" style="width:1em;'
                   'white-space:normal">12 345 678</td></tr></table></body>'))
    found = browser.problems(browser.check_page(page, BROWSER))
    assert any("did not load" in p for p in found) and any("wider than the page" in p for p in found)
    assert any("wraps" in p for p in found)
