"""Reports of runs (``report.md`` + ``report.html`` with PNG plots) and comparisons.

A report is a pure function of a :class:`snn.results.Run`: its config, summary and data
(the energy report inside). The runner renders it from the run it holds in memory
(:func:`write_report`); ``snn report RUN_DIR`` reads a stored run back and renders it
again (:func:`build_report`). Plots:

* ``accuracy_vs_timesteps.png``: SNN test accuracy after each step t, ANN accuracy as a line;
* ``energy_vs_accuracy.png``: accuracy after t steps against the SNN energy per inference of
  those t steps, one curve per hardware profile (log energy axis);
* ``firing_rates.png``: mean spikes per neuron per step of every neuron layer (max-pools of
  spikes, which route spikes and hold no neurons, left out).

Legends sit outside the plot area. With an energy report, the run folder also holds
``energy.html``, the energy report on a page of its own; the report links every file of
the run folder (:data:`ARTEFACTS`).

The text is assembled once as blocks and rendered to Markdown and HTML by
:mod:`snn.render` (images embedded in the HTML, so it is a single self-contained file);
the energy section is :func:`snn.energy.report.energy_blocks`, the same renderer as
``snn energy`` and :meth:`snn.energy.EnergyReport.to_html`.
"""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from snn import render
from snn.errors import SnnError
from snn.render import Block, Link
from snn.results import MARKER, PARTIAL, Run, read_run
from snn.util import atomic_path, atomic_write_text

ARTEFACTS = {
    "report.html": "this report (one self-contained page)",
    "report.md": "this report as Markdown (the plots beside it)",
    "energy.html": "the energy report on its own page",
    "energy.json": "the energy report as data (snn.EnergyReport.from_json)",
    "summary.json": "the headline numbers",
    "config.yaml": "the resolved config, every default filled in (snn run it again)",
    "results.h5": "accuracy per step, spike counts per layer and step, energy, training, environment",
    "network.h5": "the converted spiking network (snn.load)",
    "model.safetensors": "the trained ANN's weights, with what rebuilds the model",
    "accuracy_vs_timesteps.png": "plot: accuracy after each timestep",
    "energy_vs_accuracy.png": "plot: accuracy against energy per inference",
    "firing_rates.png": "plot: firing rate of each neuron layer",
    MARKER: "written last: the run completed",
}
"""The files of a run folder and what each holds: the report's "Files" table (any other
file in the folder is listed too, without a description)."""

TRAINING_COLUMNS = {"loss": ("loss", "number"), "train_acc": ("train accuracy", "percent"),
                    "val_acc": ("validation accuracy", "percent"), "lr": ("learning rate", "number"),
                    "seconds": ("time", "seconds")}
"""Headings and formats of the training metrics (any other: its key with spaces, a number)."""


def run_name(path: Path) -> str:
    """The name of a run folder (``<timestamp>-<hash>``); for one still being written
    (``.partial-<timestamp>-<hash>-<host>-<pid>``, :func:`snn.results.new_run`), the name it
    will have (a ``-N`` suffix, added only when that name is taken at the end, aside)."""
    name = Path(path).name
    return "-".join(name[len(PARTIAL):].split("-")[:3]) if name.startswith(PARTIAL) else name


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
    """SNN accuracy after each step, one line per run, and each run's ANN accuracy as a
    dashed line of the same colour (one legend entry for all of them)."""
    from snn.energy.report import legend_outside

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for run, lab in zip(runs, labels):
        acc = 100 * run.data.accuracy
        line, = ax.plot(np.arange(1, len(acc) + 1), acc, label=f"SNN {lab}".strip())
        ax.axhline(100 * run.data.ann_accuracy, ls="--", lw=1, color=line.get_color())
    ax.plot([], [], ls="--", lw=1, color="0.4", label="ANN (dashed, run's colour)" if len(runs) > 1 else "ANN")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs timesteps")
    ax.grid(alpha=.3)
    legend_outside(ax)
    return _save(fig, path, alt)


LINESTYLES = ("-", "--", ":", "-.")


def _plot_energy(runs: Sequence[Run], labels: Sequence[str], path: Path, alt: str) -> list[Block]:
    """Accuracy after t steps against the SNN energy per inference of those t steps, and
    each ANN as a star; no block (nothing drawn) when no run has per-step energies. One
    run: a colour per profile. Several: a colour per run, a line style per profile, and
    the legend lists runs and profiles apart (not every pair)."""
    from matplotlib.lines import Line2D

    from snn.energy.report import legend_outside

    curves = [(r, lab) for r, lab in zip(runs, labels) if r.data.energy and r.data.energy.get("per_step")]
    if not curves:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    profiles: list[str] = []
    for r, _ in curves:
        profiles += [p for p in r.data.energy["per_step"]["snn_dynamic_j"] if p not in profiles]
    several = len(curves) > 1
    for i, (run, lab) in enumerate(curves):
        ps, energy = run.data.energy["per_step"], run.data.energy["energy"]
        for hw in ps["snn_dynamic_j"]:
            k = profiles.index(hw)
            color = colors[(i if several else k) % len(colors)]
            basis = energy[hw]["basis"]
            e = ps[f"snn_{basis}_j"][hw]
            ax.plot(np.asarray(e), 100 * run.data.accuracy[:len(e)], color=color,
                    ls=LINESTYLES[k % len(LINESTYLES)] if several else "-")
            ann_j = energy[hw].get(f"ann_{basis}_j")
            if ann_j:
                ax.plot([ann_j], [100 * run.data.ann_accuracy], marker="*", ms=10, ls="", color=color)
    handles = ([Line2D([], [], color=colors[i % len(colors)], label=lab or "SNN") for i, (_, lab) in enumerate(curves)]
               + [Line2D([], [], color="0.3", ls=LINESTYLES[k % len(LINESTYLES)], label=p)
                  for k, p in enumerate(profiles)] if several else
               [Line2D([], [], color=colors[k % len(colors)], label=p) for k, p in enumerate(profiles)])
    handles.append(Line2D([], [], color="0.3", marker="*", ms=10, ls="", label="ANN"))
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference up to step t (J; the profile's basis)")
    ax.set_ylabel("test accuracy after step t (%)")
    ax.set_title("Energy vs accuracy (SNN: one point per timestep)")
    ax.grid(alpha=.3)
    legend_outside(ax, handles=handles)
    return [_save(fig, path, alt)]


def neuron_layers(run: Run) -> list[str]:
    """The recorded nodes of ``run`` that are neuron layers: those its energy report counts
    neurons in (max-pools of spikes route spikes and hold none); every recorded node when
    the run has no energy report."""
    if not run.data.energy:
        return list(run.data.spikes)
    with_neurons = {r["node"] for r in run.data.energy["layers"]
                    if r.get("neurons") and r.get("firing_rate") is not None}
    return [n for n in run.data.spikes if n in with_neurons]


def _plot_rates(run: Run, path: Path, alt: str) -> Block:
    from snn.energy.report import layer_bars

    rates = run.data.firing_rates()
    names = neuron_layers(run)
    fig, _ = layer_bars(_pyplot(), names, [rates[n] for n in names], "spikes per neuron per step",
                        "Firing rate of each neuron layer", values_shown=True)
    return _save(fig, path, alt)


# --------------------------------------------------------------------------- one run
def _files(folder: Path, extra: Sequence[str] = ()) -> Block:
    """The "Files" table: every file of the run folder (and ``extra``, written after the
    report) linked, with what it holds."""
    names = sorted({p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")} | set(extra),
                   key=lambda n: (list(ARTEFACTS).index(n) if n in ARTEFACTS else len(ARTEFACTS), n))
    return ("table", ["file", "what it holds"], [[Link(n, n), ARTEFACTS.get(n, "")] for n in names])


def _training_table(training: list[dict[str, Any]]) -> Block:
    keys = [k for k in training[0] if k != "epoch"]
    cols = [TRAINING_COLUMNS.get(k, (k.replace("_", " "), "number")) for k in keys]
    return ("table", ["epoch"] + [c[0] for c in cols],
            [[r.get("epoch", i + 1)] + [r.get(k) for k in keys] for i, r in enumerate(training)],
            ["count"] + [c[1] for c in cols])


def report_blocks(run: Run, figures: dict[str, list[Block]], name: str | None = None) -> list[Block]:
    """The report of one run as blocks; ``figures``: the ``img`` blocks of its plots by
    name ("accuracy", "energy", "rates"), see :func:`write_report`; ``name``: the run's
    name (default: its folder's, :func:`run_name`)."""
    from snn.energy.report import EnergyReport, energy_blocks

    s, d = run.summary, run.data
    T = d.timesteps
    gap = 100 * (d.ann_accuracy - float(d.accuracy[-1]))
    later = ["report.html", "report.md"] + ([] if (run.path / "summary.json").exists() else ["summary.json", MARKER])
    blocks: list[Block] = [
        ("h1", f"{s['experiment']}: {s['model']} on {s['dataset_label']}"),
        ("p", f"Run {name or run_name(run.path)}, config hash {s['config_hash']}, started {s.get('started', '?')}: "
              f"{s['n_test']} test samples, backend {s['backend']}, {s['encoding']} encoding, T = {T}."
              + (f" Sweep point: {json.dumps(s['sweep_point'])}." if s.get("sweep_point") else "")),
        ("h2", "Accuracy"),
        ("table", ["network", "test accuracy"], [
            [f"ANN ({s['model']}, {s['model_source']})", d.ann_accuracy],
            [f"SNN ({s['backend']}, T = {T}, {s['method']} normalisation)", float(d.accuracy[-1])]],
         ["text", "percent"]),
        ("p", f"The SNN is {abs(gap):.2f} percentage points {'below' if gap >= 0 else 'above'} the ANN after "
              f"{T} steps. SNN accuracy after t steps:"),
        ("table", ["T"] + list(s["accuracy_at"]), [["SNN accuracy"] + list(s["accuracy_at"].values())],
         ["text"] + ["percent"] * len(s["accuracy_at"])),
        *figures["accuracy"],
        ("h2", "Energy"),
    ]
    if d.energy:
        blocks.append(("p", ["The energy report on a page of its own: ", Link("energy.html", "energy.html"),
                             "; as data: ", Link("energy.json", "energy.json"), "."]))
        blocks += energy_blocks(EnergyReport.from_dict(d.energy), 3, figures["energy"])
    else:
        blocks.append(("p", "Energy estimation was disabled for this run (energy.enabled: false)."))
    rates = d.firing_rates()
    layers = neuron_layers(run)
    routes = [n for n in d.spikes if n not in layers]
    blocks += [
        ("h2", "Firing rates of the neuron layers"),
        ("table", ["layer", "neurons", "spikes per sample", "spikes per neuron per step"],
         [[n, d.neurons[n], float(d.spikes[n].sum()), rates[n]] for n in layers], ["text", "count", "count", "number"]),
        *([("p", f"Max-pools of spikes ({', '.join(routes)}) route spikes and hold no neurons: left out.")]
          if routes else []),
        *figures["rates"],
    ]
    if d.training:
        blocks += [("h2", "Training"), _training_table(d.training)]
    timings = s.get("timings_s", {})
    blocks += [
        ("h2", "Timings"),
        ("table", ["stage", "time"], [[k, v] for k, v in timings.items()], ["text", "seconds"]),
        *([("p", "report: the plots; the pages themselves are written after the total, in milliseconds.")]
          if "report" in timings else []),
        ("h2", "Files"), _files(run.path, later),
        ("h2", "Environment"),
        ("table", ["item", "value"], [[k, v] for k, v in d.environment.items()]),
        ("h2", "Configuration"),
        ("pre", yaml.safe_dump(run.config, sort_keys=False)),
    ]
    return blocks


def report_figures(run: Run) -> dict[str, list[Block]]:
    """Draw the plots of ``run`` into ``run.path`` (each file once, atomically), and with an
    energy report its page ``energy.html``; return the plots' blocks."""
    p = run.path
    if run.data.energy:
        from snn.energy.report import EnergyReport

        EnergyReport.from_dict(run.data.energy).to_html(p / "energy.html")
    return {"accuracy": [_plot_accuracy([run], [""], p / "accuracy_vs_timesteps.png",
                                        "SNN accuracy after each timestep; dashed: ANN accuracy")],
            "energy": _plot_energy([run], [""], p / "energy_vs_accuracy.png",
                                   "Accuracy after t steps vs the SNN energy of those t steps"),
            "rates": [_plot_rates(run, p / "firing_rates.png", "Mean spikes per neuron per step of each neuron layer")]}


def write_report(run: Run, figures: dict[str, list[Block]] | None = None, name: str | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and (unless ``figures`` are given, drawn by
    :func:`report_figures`) the plots of ``run`` into ``run.path``, each file once,
    atomically, from the run as given; return report.html. ``name``: the run's name in
    the page's title (default: :func:`run_name` of its folder, the name a run
    being written will have)."""
    figures = report_figures(run) if figures is None else figures
    name = name or run_name(run.path)
    return _write(run.path, report_blocks(run, figures, name), f"{run.summary['experiment']}: run {name}", "report")[1]


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


COMPARE_COLUMNS = (("dataset_label", "dataset", "text"), ("model", "model", "text"), ("backend", "backend", "text"),
                   ("timesteps", "T", "count"), ("method", "method", "text"),
                   ("ann_accuracy", "ANN accuracy", "percent"), ("snn_accuracy", "SNN accuracy", "percent"))
"""The per-run columns of a comparison: (summary key, heading, format)."""


def compare_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (cells as shown) of :func:`compare_columns`: one row per run."""
    head, rows, fmts, _ = compare_columns(runs)
    cols = [render.format_column(f, [r[i] for r in rows]) for i, f in enumerate(fmts)]
    return head, [[str(c) for c in r] for r in zip(*cols)]


def compare_columns(runs: Sequence[Run]) -> tuple[list[str], list[list[Any]], list[str], str]:
    """One row per run: headers, rows (raw values), column formats (:mod:`snn.render`) and
    a sentence naming what every run shares. Columns: the run's label, the
    :data:`COMPARE_COLUMNS` that differ between runs (those shared by all go to the
    sentence), the gap in percentage points, and the SNN energy per inference on each
    profile (on the profile's basis: total where it has a platform tier, else dynamic)."""
    hws: list[str] = []
    for r in runs:
        for hw in (r.summary.get("energy") or {}):
            if hw not in hws:
                hws.append(hw)
    shared = [c for c in COMPARE_COLUMNS[:5] if len(runs) > 1 and len({str(r.summary[c[0]]) for r in runs}) == 1]
    cols = [c for c in COMPARE_COLUMNS if c not in shared]
    basis = {hw: next(r.summary["energy"][hw].get("basis", "dynamic") for r in runs
                       if hw in (r.summary.get("energy") or {})) for hw in hws}
    head = ["run"] + [h for _, h, _ in cols] + ["gap (points)"] + [f"SNN {hw} ({basis[hw]})" for hw in hws]
    rows = [[_run_label(r, runs)] + [r.summary[k] for k, _, _ in cols] + [100 * r.summary["accuracy_gap"]]
            + [((r.summary.get("energy") or {}).get(hw) or {}).get(f"snn_{basis[hw]}_j") for hw in hws] for r in runs]
    fmts = ["text"] + [f for _, _, f in cols] + ["number"] + ["J"] * len(hws)
    common = "; ".join(f"{h} {runs[0].summary[k]}" for k, h, _ in shared)
    return head, rows, fmts, (f"Every run: {common}." if common else "")


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
    head, rows, fmts, common = compare_columns(runs)
    blocks: list[Block] = [("h1", title),
                           ("p", f"{len(runs)} runs, compared {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
                                 + common + " SNN energy per inference on each profile's basis (total where the "
                                 "profile has a platform tier, else dynamic)."),
                           ("table", head, rows, fmts),
                           _plot_accuracy(runs, labels, out / "accuracy_vs_timesteps.png",
                                          "SNN accuracy vs timesteps; dashed: ANN accuracy"),
                           *_plot_energy(runs, labels, out / "energy_vs_accuracy.png",
                                         "Energy per inference vs accuracy")]
    energy_runs = [(r, lab) for r, lab in zip(runs, labels) if (r.path / "energy.json").is_file()]
    if energy_runs:
        from snn.energy import compare

        cmp = compare([r.path / "energy.json" for r, _ in energy_runs], names=[lab for _, lab in energy_runs])
        cmp.to_json(out / "energy_compare.json")
        blocks += [("h2", "Energy per inference, every profile"), *cmp.table_blocks(),
                   ("p", ["As data: ", Link("energy_compare.json", "energy_compare.json"), "."])]
    blocks += [("h2", "Runs"), ("table", ["run", "report", "directory"],
                                [[lab, Link("report.html", os.path.relpath(r.path / "report.html", out)), str(r.path)]
                                 for lab, r in zip(labels, runs)])]
    _write(out, blocks, title, "compare")
    return out
