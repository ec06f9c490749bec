"""Reports of stored runs (``report.md`` + ``report.html`` with PNG plots) and comparisons.

A report is built only from what a run directory holds (config.yaml, summary.json,
results.h5 with the energy report inside), so ``snn report RUN_DIR`` rebuilds it at any time. Plots:

* ``accuracy_vs_timesteps.png``: SNN test accuracy after each step t, ANN accuracy as a line;
* ``energy_vs_accuracy.png``: accuracy after t steps against the SNN energy per inference of
  those t steps, one curve per hardware profile (log energy axis);
* ``firing_rates.png``: mean spikes per neuron per step of every spiking layer.

The text is assembled once as a list of blocks and rendered to both Markdown and HTML
(images embedded in the HTML as base64, so it is a single self-contained file).
"""
from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from snn.errors import SnnError
from snn.results import Run, read_run
from snn.util import atomic_path, atomic_write_text

Block = tuple  # ("h1"|"h2"|"h3"|"p"|"pre", text) | ("table", headers, rows) | ("img", file, alt) | ("ul", items)


# --------------------------------------------------------------------------- rendering
def _md(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "pre":
            out.append("```\n" + b[1].rstrip() + "\n```")
        elif kind == "table":
            head, rows = b[1], b[2]
            out.append("\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                                 + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]))
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
    return "\n\n".join(out) + "\n"


def _html(blocks: list[Block], title: str, folder: Path) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((folder / b[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em;"
             "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}"
             "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _write(folder: Path, blocks: list[Block], title: str, stem: str) -> tuple[Path, Path]:
    md, page = folder / f"{stem}.md", folder / f"{stem}.html"
    atomic_write_text(md, _md(blocks))
    atomic_write_text(page, _html(blocks, title, folder))
    return md, page


# --------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def _plot_accuracy(runs: Sequence[Run], labels: Sequence[str], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for run, lab in zip(runs, labels):
        acc = 100 * run.data.accuracy
        line, = ax.plot(np.arange(1, len(acc) + 1), acc, label=f"SNN {lab}".strip())
        ax.axhline(100 * run.data.ann_accuracy, ls="--", lw=1, color=line.get_color(),
                   label=f"ANN {lab}".strip() if len(runs) > 1 else "ANN")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs timesteps")
    ax.grid(alpha=.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def _plot_energy(runs: Sequence[Run], labels: Sequence[str], path: Path) -> bool:
    """Accuracy after t steps against the SNN energy per inference of those t steps, one
    line per (run, profile); False (nothing drawn) when no run has per-step energies."""
    curves = [(r, lab) for r, lab in zip(runs, labels) if r.data.energy and r.data.energy.get("per_step")]
    if not curves:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for run, lab in curves:
        ps = run.data.energy["per_step"]
        for hw, e in ps["snn_j"].items():
            line, = ax.plot(np.asarray(e), 100 * run.data.accuracy[:len(e)], label=f"SNN {hw} {lab}".strip())
            ann_j = run.data.energy["energy"].get(hw, {}).get("ann_j")
            if ann_j:
                ax.plot([ann_j], [100 * run.data.ann_accuracy], marker="*", ms=10, ls="", color=line.get_color(),
                        label=f"ANN {hw} {lab}".strip())
    ax.set_xscale("log")
    ax.set_xlabel("SNN energy per inference up to step t (J)")
    ax.set_ylabel("test accuracy after step t (%)")
    ax.set_title("Energy vs accuracy (SNN: one point per timestep; star: ANN)")
    ax.grid(alpha=.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def _plot_rates(run: Run, path: Path) -> None:
    plt = _pyplot()
    rates = run.data.firing_rates()
    fig, ax = plt.subplots(figsize=(6.4, max(2.5, .3 * len(rates) + 1)))
    names = list(rates)
    ax.barh(np.arange(len(names)), [rates[n] for n in names])
    ax.set_yticks(np.arange(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("spikes per neuron per step")
    ax.set_title("Per-layer firing rates")
    ax.grid(alpha=.3, axis="x")
    _save(fig, path)


# --------------------------------------------------------------------------- one run
def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _joules(v: float) -> str:
    for unit, f in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(v) >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g} J"


def _energy_blocks(e: dict[str, Any], images: dict[str, str], full_report: bool) -> list[Block]:
    """The energy section from a stored energy report (:meth:`snn.energy.EnergyReport.to_dict`)."""
    from snn.energy.report import LAYER_COLUMNS, fmt

    profs = list(e["energy"])
    carbon = e.get("carbon", {}).get("per_profile", {})
    blocks: list[Block] = [
        ("p", "Per inference. ratio = ANN J / SNN J (above 1 the SNN is cheaper); break-even rate = the mean "
              "firing rate (spikes/neuron/step) at which the SNN costs as much as the ANN. Estimated from "
              "operation counts x the profiles' published per-op energies."),
        ("table", ["hardware", "ANN J", "SNN J", "ANN/SNN", "break-even rate", "SNN gCO2e", "status"],
         [[p, fmt(v["ann_j"]), fmt(v["snn_j"]), fmt(v["ratio"]), fmt(v.get("break_even_rate")),
           fmt(carbon.get(p, {}).get("snn_g")), "estimated" if v.get("estimated", True) else "measured"]
          for p, v in e["energy"].items()]),
    ]
    if "energy" in images:
        blocks.append(("img", images["energy"], "Accuracy after t steps vs the SNN energy of those t steps"))
    blocks += [
        ("h3", "Operation counts per layer"),
        ("table", [h for _, h in LAYER_COLUMNS] + [f"J {p}" for p in profs],
         [[fmt(r.get(k)) for k, _ in LAYER_COLUMNS] + [fmt(r.get("energy_j", {}).get(p)) for p in profs]
          for r in e["layers"]]),
        ("h3", "Assumptions"),
        ("ul", list(e.get("assumptions", []))),
    ]
    if full_report:
        blocks.append(("p", "The full energy report (profiles with the source of every constant, carbon, "
                            "per-timestep table): energy.html, energy.json."))
    return blocks


def report_blocks(run: Run, images: dict[str, str]) -> list[Block]:
    """The report of one run as blocks (see :func:`build_report`)."""
    s, d = run.summary, run.data
    T = d.timesteps
    blocks: list[Block] = [
        ("h1", f"{s['experiment']}: {s['model']} on {s['dataset_label']}"),
        ("p", f"Config hash {s['config_hash']}, started {s.get('started', '?')}, "
              f"{s['n_test']} test samples, backend {s['backend']}, {s['encoding']} encoding, T = {T}."
              + (f" Sweep point: {json.dumps(s['sweep_point'])}." if s.get("sweep_point") else "")),
        ("h2", "Accuracy"),
        ("table", ["network", "test accuracy"], [
            [f"ANN ({s['model']}, {s['model_source']})", _pct(d.ann_accuracy)],
            [f"SNN ({s['backend']}, T = {T}, {s['method']} normalisation)", _pct(float(d.accuracy[-1]))],
            ["ANN - SNN", f"{100 * (d.ann_accuracy - float(d.accuracy[-1])):.2f} points"]]),
        ("table", ["T"] + list(s["accuracy_at"]), [["SNN accuracy"] + [_pct(v) for v in s["accuracy_at"].values()]]),
        ("img", images["accuracy"], "SNN accuracy after each timestep; dashed: ANN accuracy"),
        ("h2", "Energy"),
    ]
    if d.energy:
        blocks += _energy_blocks(d.energy, images, (run.path / "energy.html").is_file())
    else:
        blocks.append(("p", "Energy estimation was disabled for this run (energy.enabled: false)."))
    rates = d.firing_rates()
    blocks += [
        ("h2", "Per-layer firing rates"),
        ("table", ["layer", "neurons", "spikes per sample", "spikes per neuron per step"],
         [[n, d.neurons[n], f"{float(d.spikes[n].sum()):.1f}", f"{rates[n]:.4f}"] for n in d.spikes]),
        ("img", images["rates"], "Mean spikes per neuron per step of each spiking layer"),
    ]
    if d.training:
        keys = [k for k in d.training[0] if k != "epoch"]
        blocks += [("h2", "Training"), ("table", ["epoch"] + keys, [
            [r.get("epoch", i + 1)] + [f"{r[k]:.4g}" if isinstance(r.get(k), float) else r.get(k, "") for k in keys]
            for i, r in enumerate(d.training)])]
    blocks += [
        ("h2", "Timings"),
        ("table", ["stage", "seconds"], [[k, f"{v:.2f}"] for k, v in s.get("timings_s", {}).items()]),
        ("h2", "Environment"),
        ("table", ["item", "value"], [[k, v] for k, v in d.environment.items()]),
        ("h2", "Configuration"),
        ("pre", (run.path / "config.yaml").read_text()),
    ]
    return blocks


def build_report(run_dir: str | Path, complete: bool = True) -> Path:
    """(Re)build ``report.md``, ``report.html`` and the plots of a run; return report.html.

    ``complete=False``: the run is still being written (no ``COMPLETE`` marker yet)."""
    p = Path(run_dir)
    run = read_run(p, require_complete=complete)
    images = {"accuracy": "accuracy_vs_timesteps.png", "rates": "firing_rates.png"}
    _plot_accuracy([run], [""], p / images["accuracy"])
    if _plot_energy([run], [""], p / "energy_vs_accuracy.png"):
        images["energy"] = "energy_vs_accuracy.png"
    _plot_rates(run, p / images["rates"])
    title = f"{run.summary['experiment']} ({p.name})"
    return _write(p, report_blocks(run, images), title, "report")[1]


# --------------------------------------------------------------------------- several runs
def _run_label(run: Run, others: Sequence[Run]) -> str:
    """A short label: the sweep point if any, else experiment (and hash if ambiguous)."""
    if run.summary.get("sweep_point"):
        return " ".join(f"{k.split('.')[-1]}={v}" for k, v in run.summary["sweep_point"].items())
    names = [o.summary["experiment"] for o in others]
    name = run.summary["experiment"]
    return name if names.count(name) == 1 else f"{name} {run.summary['config_hash'][:6]}"


def compare_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per run, with accuracies and SNN energy per inference."""
    hws: list[str] = []
    for r in runs:
        for hw in (r.summary.get("energy") or {}):
            if hw not in hws:
                hws.append(hw)
    head = ["run", "dataset", "model", "backend", "T", "method", "ANN acc", "SNN acc", "gap (points)"] \
        + [f"SNN J {hw}" for hw in hws]
    rows = []
    for r in runs:
        s, e = r.summary, r.summary.get("energy") or {}
        rows.append([_run_label(r, runs), s["dataset_label"], s["model"], s["backend"], str(s["timesteps"]),
                     s["method"], _pct(s["ann_accuracy"]), _pct(s["snn_accuracy"]),
                     f"{100 * s['accuracy_gap']:.2f}"] + [_joules(e[hw]["snn_j"]) if hw in e else "n/a" for hw in hws])
    return head, rows


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, title: str = "Comparison") -> Path:
    """Tabulate and plot several runs into ``out_dir`` (compare.md, compare.html, plots, and
    :func:`snn.energy.compare` of their energy reports in energy_compare.json); return
    ``out_dir``. Every path must be a complete run directory."""
    if not run_dirs:
        raise SnnError("nothing to compare: give at least one run directory")
    runs = [read_run(p) for p in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [_run_label(r, runs) for r in runs]
    head, rows = compare_table(runs)
    blocks: list[Block] = [("h1", title), ("p", f"{len(runs)} runs, compared {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."),
                           ("table", head, rows)]
    _plot_accuracy(runs, labels, out / "accuracy_vs_timesteps.png")
    blocks.append(("img", "accuracy_vs_timesteps.png", "SNN accuracy vs timesteps; dashed: ANN accuracy"))
    if _plot_energy(runs, labels, out / "energy_vs_accuracy.png"):
        blocks.append(("img", "energy_vs_accuracy.png", "Energy per inference vs accuracy"))
    energy_runs = [r for r in runs if (r.path / "energy.json").is_file()]
    if energy_runs:
        from snn.energy import compare
        from snn.energy.report import fmt

        cmp = compare([r.path / "energy.json" for r in energy_runs])
        cmp.to_json(out / "energy_compare.json")
        cols = list(cmp.COLUMNS)
        blocks += [("h2", "Energy per inference, every profile"),
                   ("table", cols, [[fmt(row.get(c)) for c in cols] for row in cmp.rows])]
    blocks += [("h2", "Runs"), ("table", ["run", "directory"], [[lab, str(r.path)] for lab, r in zip(labels, runs)])]
    _write(out, blocks, title, "compare")
    return out
