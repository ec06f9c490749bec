"""Reports of runs (``report.md`` + ``report.html`` with PNG plots) and comparisons.

A report is a pure function of a :class:`snn.results.Run`: its config, summary and data
(the energy report inside). The runner renders it from the run it holds in memory
(:func:`write_report`); ``snn report RUN_DIR`` reads a stored run back and renders it
again (:func:`build_report`). Plots:

* ``accuracy_vs_timesteps.png``: SNN test accuracy after each step t, ANN accuracy as a line;
* ``energy_vs_accuracy.png``: accuracy after t steps against the SNN energy per inference of
  those t steps, one curve per hardware profile (log energy axis);
* ``firing_rates.png``: mean spikes per neuron per step of every spiking layer.

The text is assembled once as blocks and rendered to Markdown and HTML by
:mod:`snn.render` (images embedded in the HTML, so it is a single self-contained file);
the energy section is :func:`snn.energy.report.energy_blocks`, the same renderer as
``snn energy`` and :meth:`snn.energy.EnergyReport.to_html`.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from snn import render
from snn.errors import SnnError
from snn.render import Block
from snn.results import Run, read_run
from snn.util import atomic_path, atomic_write_text


def _write(folder: Path, blocks: list[Block], title: str, stem: str) -> tuple[Path, Path]:
    md, page = folder / f"{stem}.md", folder / f"{stem}.html"
    atomic_write_text(md, render.markdown(blocks))
    atomic_write_text(page, render.html(blocks, title))
    return md, page


# --------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, alt: str) -> Block:
    """Write ``fig`` to ``path`` (PNG, atomically); the ``img`` block that shows it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return ("img", path.name, alt, buf.getvalue())


def _plot_accuracy(runs: Sequence[Run], labels: Sequence[str], path: Path, alt: str) -> Block:
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
    return _save(fig, path, alt)


def _plot_energy(runs: Sequence[Run], labels: Sequence[str], path: Path, alt: str) -> list[Block]:
    """Accuracy after t steps against the SNN energy per inference of those t steps, one
    line per (run, profile); no block (nothing drawn) when no run has per-step energies."""
    curves = [(r, lab) for r, lab in zip(runs, labels) if r.data.energy and r.data.energy.get("per_step")]
    if not curves:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for run, lab in curves:
        ps, energy = run.data.energy["per_step"], run.data.energy["energy"]
        for hw in ps["snn_dynamic_j"]:
            basis = energy[hw]["basis"]
            e = ps[f"snn_{basis}_j"][hw]
            line, = ax.plot(np.asarray(e), 100 * run.data.accuracy[:len(e)],
                            label=f"SNN {hw} ({basis}) {lab}".strip())
            ann_j = energy[hw].get(f"ann_{basis}_j")
            if ann_j:
                ax.plot([ann_j], [100 * run.data.ann_accuracy], marker="*", ms=10, ls="", color=line.get_color(),
                        label=f"ANN {hw} ({basis}) {lab}".strip())
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference up to step t (J; total or dynamic, as labelled)")
    ax.set_ylabel("test accuracy after step t (%)")
    ax.set_title("Energy vs accuracy (SNN: one point per timestep; star: ANN)")
    ax.grid(alpha=.3)
    ax.legend(fontsize=7)
    return [_save(fig, path, alt)]


def _plot_rates(run: Run, path: Path, alt: str) -> Block:
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
    return _save(fig, path, alt)


# --------------------------------------------------------------------------- one run
def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _joules(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, f in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(v) >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g} J"


def report_blocks(run: Run, figures: dict[str, list[Block]]) -> list[Block]:
    """The report of one run as blocks; ``figures``: the ``img`` blocks of its plots by
    name ("accuracy", "energy", "rates"), see :func:`write_report`."""
    from snn.energy.report import EnergyReport, energy_blocks

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
        *figures["accuracy"],
        ("h2", "Energy"),
    ]
    if d.energy:
        blocks += energy_blocks(EnergyReport.from_dict(d.energy), 3, figures["energy"])
    else:
        blocks.append(("p", "Energy estimation was disabled for this run (energy.enabled: false)."))
    rates = d.firing_rates()
    blocks += [
        ("h2", "Per-layer firing rates"),
        ("table", ["layer", "neurons", "spikes per sample", "spikes per neuron per step"],
         [[n, d.neurons[n], f"{float(d.spikes[n].sum()):.1f}", f"{rates[n]:.4f}"] for n in d.spikes]),
        *figures["rates"],
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
        ("pre", yaml.safe_dump(run.config, sort_keys=False)),
    ]
    return blocks


def write_report(run: Run) -> Path:
    """Write ``report.md``, ``report.html`` and the plots of ``run`` into ``run.path``
    (each file once, atomically) from the run as given; return report.html."""
    p = run.path
    figures = {"accuracy": [_plot_accuracy([run], [""], p / "accuracy_vs_timesteps.png",
                                           "SNN accuracy after each timestep; dashed: ANN accuracy")],
               "energy": _plot_energy([run], [""], p / "energy_vs_accuracy.png",
                                      "Accuracy after t steps vs the SNN energy of those t steps"),
               "rates": [_plot_rates(run, p / "firing_rates.png",
                                     "Mean spikes per neuron per step of each spiking layer")]}
    return _write(p, report_blocks(run, figures), f"{run.summary['experiment']} ({p.name})", "report")[1]


def build_report(run_dir: str | Path) -> Path:
    """Rebuild the report of a stored (complete) run from its files; return report.html."""
    return write_report(read_run(run_dir))


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
        + [f"SNN J {hw} total / dynamic" for hw in hws]
    rows = []
    for r in runs:
        s, e = r.summary, r.summary.get("energy") or {}
        rows.append([_run_label(r, runs), s["dataset_label"], s["model"], s["backend"], str(s["timesteps"]),
                     s["method"], _pct(s["ann_accuracy"]), _pct(s["snn_accuracy"]),
                     f"{100 * s['accuracy_gap']:.2f}"] + [f"{_joules(e[hw]['snn_total_j'])} / {_joules(e[hw]['snn_dynamic_j'])}"
                                                  if hw in e else "n/a" for hw in hws])
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
                           ("table", head, rows),
                           _plot_accuracy(runs, labels, out / "accuracy_vs_timesteps.png",
                                          "SNN accuracy vs timesteps; dashed: ANN accuracy"),
                           *_plot_energy(runs, labels, out / "energy_vs_accuracy.png",
                                         "Energy per inference vs accuracy")]
    energy_runs = [r for r in runs if (r.path / "energy.json").is_file()]
    if energy_runs:
        from snn.energy import compare

        cmp = compare([r.path / "energy.json" for r in energy_runs])
        cmp.to_json(out / "energy_compare.json")
        blocks += [("h2", "Energy per inference, every profile"), cmp.table_block()]
    blocks += [("h2", "Runs"), ("table", ["run", "directory"], [[lab, str(r.path)] for lab, r in zip(labels, runs)])]
    _write(out, blocks, title, "compare")
    return out
