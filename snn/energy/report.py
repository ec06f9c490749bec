"""The energy report: per-layer table, totals, ANN vs SNN on every profile, ratios, the
break-even spike rate, energy at each timestep next to accuracy, carbon, and every
assumption written out. Writes JSON, Markdown and HTML (plots embedded as base64 PNG).

:func:`energy_blocks` is the one renderer of the energy section: the text table
(:meth:`EnergyReport.table`, printed by ``snn energy``), the Markdown and HTML files, and
the "Energy" section of a run's report all come from it (through :mod:`snn.render`).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from snn import render
from snn.energy.totals import Totals
from snn.errors import SnnError
from snn.render import Block
from snn.util import atomic_write_text

LAYER_COLUMNS = (("node", "node", "text"), ("kind", "kind", "text"), ("synops", "SynOps", "count"),
                 ("input_macs", "input MACs", "count"), ("macs_dense", "ANN MACs", "count"),
                 ("macs_effective", "ANN effective MACs", "count"), ("neuron_updates", "neuron updates", "count"),
                 ("spikes", "spikes", "count"), ("firing_rate", "spikes per neuron per step", "number"))
"""The per-layer counts table: (key of a layer row and of :class:`Totals`, heading, column format)."""

COUNT_LABELS = {
    "synops": "SynOps (spikes x fan-out)", "input_macs": "input MACs (first layer on analog input)",
    "input_macs_effective": "input MACs on non-zero inputs", "current_macs": "MACs of current-fed layers",
    "current_macs_static": "of which computed once", "neurons": "neurons (IF and readout)", "if_neurons": "IF neurons",
    "neuron_updates": "neuron updates", "active_updates": "neuron updates that spike", "spikes": "spikes",
    "routed_spikes": "spikes routed by max-pools", "spike_connections": "connections of spiking inputs",
    "macs_dense": "ANN MACs (dense)", "macs_effective": "ANN MACs on non-zero inputs", "ann_neurons": "ANN neurons",
    "ann_activation_writes": "ANN activation writes", "ann_io_elements": "ANN input/output elements",
    "ann_kernels": "ANN kernels (fused)", "snn_io_elements_per_step": "SNN input/output elements per step",
    "snn_io_elements_static": "SNN input/output elements, once", "snn_kernels_per_step": "SNN kernels per step (fused)",
    "snn_kernels_static": "SNN kernels, once", "params": "parameters", "memory_accesses": "SNN memory accesses",
    "ann_memory_accesses": "ANN memory accesses"}
"""Human names of the :class:`Totals` counts (any other count: its key with spaces)."""
RATE_LABELS = {"activation_sparsity": "ANN activation sparsity (zero activations)",
               "connection_sparsity": "connection sparsity (zero weights)"}
"""The :class:`Totals` fields that are shares, not counts (shown in percent; the firing
rate, also not a count, is written under the table)."""


def fmt(v: Any) -> str:
    """Three significant digits; '–' for None (prose; tables format by column, :mod:`snn.render`)."""
    if v is None:
        return render.NONE
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) < 10**7 else f"{float(v):.3g}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3g}"
    return str(v)


def basis_j(entry: dict[str, Any], side: str, basis: str | None = None) -> float | None:
    """The energy per inference (J) of ``side`` ("snn" or "ann") in a report's entry for one
    profile, on ``basis`` ("dynamic" or "total"; default the entry's own: total where the
    profile has a platform tier, else dynamic)."""
    return entry.get(f"{side}_{basis or entry['basis']}_j")


def jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, tuples and nested containers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


@dataclass
class EnergyReport:
    """Operation counts and energy per inference of one simulated network.

    ``totals``: the counts per inference (:class:`~snn.energy.totals.Totals`). ``layers``:
    one row per synaptic or neuron node (counts, plus ``node``, ``kind`` and ``energy_j``
    per profile). ``energy``: ``{profile: {"snn_dynamic_j", "snn_total_j", "ann_dynamic_j",
    "ann_total_j", "snn_latency_s", "ratio_dynamic", "ratio_total", "basis", ...}}`` where
    ``ratio = ANN J / SNN J`` (above 1 the SNN is cheaper) and ``basis`` says which energy
    the headline figures use (total where the profile has a platform tier, else dynamic).
    ``per_step``: SNN energy (dynamic and total) after each timestep per profile, next to
    accuracy when labels were given. ``early_exit``: what early exit per sample gave on
    this network (:meth:`snn.early_exit.EarlyExitResult.to_dict`: the rule's ``beta``,
    accuracy with and without it, the distribution of exit steps and, per profile, the
    energy per inference with early exit, with all ``T`` steps and the fraction saved), or
    None.
    """

    totals: Totals
    layers: list[dict[str, Any]]
    energy: dict[str, dict[str, Any]]
    assumptions: list[str]
    profiles: dict[str, dict[str, Any]]
    carbon: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    per_step: dict[str, Any] | None = None
    measurements: list[dict[str, Any]] = field(default_factory=list)
    early_exit: dict[str, Any] | None = None

    # ------------------------------------------------------------------ queries
    def cheapest_timesteps(self, accuracy: float, profile: str) -> dict[str, Any] | None:
        """The number of steps with the least SNN energy on ``profile`` among those whose
        accuracy reaches ``accuracy``; None when no step does."""
        ps = self.per_step
        if ps is None or ps.get("accuracy") is None:
            raise SnnError("accuracy per timestep is unknown: pass labels= to energy_report "
                           "and simulate with record='steps'")
        if profile not in ps["snn_dynamic_j"]:
            raise SnnError(f"profile {profile!r} is not in this report; it has {', '.join(ps['snn_dynamic_j'])}")
        basis = self.energy[profile]["basis"]
        best = None
        for t, a, e in zip(ps["timesteps"], ps["accuracy"], ps[f"snn_{basis}_j"][profile]):
            if a >= accuracy and (best is None or e < best["energy_j"]):
                best = {"timesteps": t, "accuracy": a, "energy_j": e, "basis": basis}
        return best

    # ------------------------------------------------------------------ text
    def table(self) -> str:
        """Per-layer counts and SNN joules per inference per profile with the totals, then
        ANN vs SNN for every profile (the brief form of :func:`energy_blocks`, as text)."""
        return render.text(energy_blocks(self, brief=True))

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"format": "snn.EnergyReport", "version": 2, "meta": self.meta, "totals": self.totals.to_dict(),
                         "layers": self.layers, "energy": self.energy, "per_step": self.per_step,
                         "assumptions": self.assumptions, "profiles": self.profiles, "carbon": self.carbon,
                         "measurements": self.measurements, "early_exit": self.early_exit})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EnergyReport":
        if d.get("format") != "snn.EnergyReport":
            raise SnnError("not an snn energy report (format field missing)")
        if d.get("version") != 2:
            raise SnnError(f"energy report version {d.get('version')} is not readable by this snn (version 2: "
                           "dynamic and total energy); re-run the energy report")
        return cls(totals=Totals.from_dict(d["totals"]), layers=d["layers"], energy=d["energy"], assumptions=d["assumptions"],
                   profiles=d["profiles"], carbon=d["carbon"], meta=d.get("meta", {}), per_step=d.get("per_step"),
                   measurements=d.get("measurements", []), early_exit=d.get("early_exit"))

    @classmethod
    def from_json(cls, path: str | Path) -> "EnergyReport":
        path = Path(path)
        if not path.exists():
            raise SnnError(f"no such report: {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError) as e:
            raise SnnError(f"{path} is not a readable snn energy report ({e})") from e

    def to_json(self, path: str | Path) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return Path(path)

    def blocks(self, figures: bool = False) -> list[Block]:
        """The report as a document: a title and :func:`energy_blocks` (with this report's
        plots when ``figures``)."""
        imgs = [("img", None, alt, png) for alt, png in self.figures().items()] if figures else []
        return [("h1", f"Energy report: {self.meta.get('name', 'network')}")] + energy_blocks(self, 2, imgs)

    def markdown(self) -> str:
        """The report as Markdown text."""
        return render.markdown(self.blocks())

    def to_markdown(self, path: str | Path) -> Path:
        atomic_write_text(path, self.markdown())
        return Path(path)

    # ------------------------------------------------------------------ HTML
    def figures(self) -> dict[str, bytes]:
        """Plots as PNG bytes, keyed by caption: per-layer synaptic operations, firing rates
        of the neuron layers, energy vs accuracy (or vs T)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out: dict[str, bytes] = {}
        syn = [r for r in self.layers if r["synops"] or r["input_macs"]]
        if syn:
            fig, ax = layer_bars(plt, [r["node"] for r in syn], [r["synops"] for r in syn],
                                 "operations per inference", "Synaptic operations per layer", label="SynOps")
            ax.barh(np.arange(len(syn)), [r["input_macs"] for r in syn], left=[r["synops"] for r in syn],
                    label="input MACs", color="tab:green")
            legend_outside(ax)
            out["Synaptic operations per layer"] = _png(fig)
        fr = [r for r in self.layers if r.get("firing_rate") is not None and r.get("neurons")]
        if fr:
            fig, _ = layer_bars(plt, [r["node"] for r in fr], [r["firing_rate"] for r in fr],
                                "spikes per neuron per step", "Firing rates of the neuron layers", color="tab:orange",
                                values_shown=True)
            out["Firing rates of the neuron layers"] = _png(fig)
        ps = self.per_step
        if ps is not None:
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
            for p in ps["snn_dynamic_j"]:
                basis = self.energy[p]["basis"]
                ys = ps[f"snn_{basis}_j"][p]
                if ps.get("accuracy"):
                    ax.plot(ys, 100 * np.asarray(ps["accuracy"]), label=f"{p} ({basis})")
                else:
                    ax.plot(ps["timesteps"], ys, label=f"{p} ({basis})")
            ax.set_xscale("log")
            if ps.get("accuracy"):
                ax.set_xlabel("SNN energy per inference up to step T (J)")
                ax.set_ylabel("accuracy at step T (%)")
                ax.set_title("Accuracy vs energy (one point per timestep)")
            else:
                ax.set_yscale("log")
                ax.set_xlabel("timesteps")
                ax.set_ylabel("energy per inference (J)")
            ax.grid(alpha=.3)
            legend_outside(ax, title="profile (basis)")
            out["Energy per inference up to each timestep"] = _png(fig)
        return out

    def to_html(self, path: str | Path) -> Path:
        """The report with its plots as one self-contained HTML page."""
        atomic_write_text(path, render.html(self.blocks(figures=True), f"snn energy report: "
                                                                        f"{self.meta.get('name', 'network')}"))
        return Path(path)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def legend_outside(ax: Any, **kwargs: Any) -> None:
    """The legend of ``ax`` to the right of its plot area, where it never covers a curve
    (save with ``bbox_inches="tight"`` to keep it in the image)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False, **kwargs)


def layer_bars(plt: Any, names: Sequence[str], values: Sequence[float], xlabel: str, title: str,
               values_shown: bool = False, **bar: Any) -> tuple[Any, Any]:
    """One horizontal bar per layer, the layers' names in full and readable on the y axis
    (first layer on top); ``values_shown``: each bar's value written at its end. Returns (fig, ax)."""
    fig, ax = plt.subplots(figsize=(6.4, 1.3 + 0.34 * len(names)))
    y = np.arange(len(names))
    ax.barh(y, values, **bar)
    ax.set_yticks(y, list(names), fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=.3, axis="x")
    if values_shown:
        for yi, v in zip(y, values):
            ax.annotate(f"{v:.3g}", (v, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.margins(x=0.15 if values_shown else 0.03)
    return fig, ax


# --------------------------------------------------------------------------- the energy section
def _layer_tables(rep: EnergyReport) -> list[Block]:
    """The counts of every layer with the network's totals, then the compute-tier SNN
    energy per inference of every layer on every estimated profile."""
    t = rep.totals
    counts = ("table", [h for _, h, _ in LAYER_COLUMNS],
              [[r.get(k) for k, _, _ in LAYER_COLUMNS] for r in rep.layers]
              + [["all layers", ""] + [getattr(t, k) for k, _, _ in LAYER_COLUMNS[2:]]],
              [f for _, _, f in LAYER_COLUMNS])
    profs = [p for p, e in rep.energy.items() if e.get("estimated", True)]
    rows = [[r["node"]] + [r.get("energy_j", {}).get(p) for p in profs] for r in rep.layers]
    rows.append(["all layers"] + [sum(r.get("energy_j", {}).get(p) or 0.0 for r in rep.layers) for p in profs])
    energy = ("table", ["node"] + [f"compute energy, {p}" for p in profs], rows, ["text"] + ["J"] * len(profs))
    return [counts, *render.split_table(energy)]


def _status(e: dict[str, Any]) -> str:
    return "estimated" if e.get("estimated", True) else f"measured ({e.get('device', '?')})"


def _profile_tables(rep: EnergyReport) -> list[Block]:
    """ANN vs SNN energy per inference on every profile; then their ratios, the break-even
    rate, latency and carbon (two tables, so that each fits the page)."""
    carbon = rep.carbon.get("per_profile", {})
    energy = [[p, e["basis"], e.get("ann_dynamic_j"), e.get("ann_total_j"), e.get("snn_dynamic_j"),
               e.get("snn_total_j"), tuple(e[f"snn_{e['basis']}_range"]) if e.get(f"snn_{e['basis']}_range") else None,
               _status(e)] for p, e in rep.energy.items()]
    ratios = [[p, e.get("ratio_dynamic"), e.get("ratio_total"), e.get("break_even_rate"), e.get("snn_latency_s"),
               carbon.get(p, {}).get("snn_g"), carbon.get(p, {}).get("ann_g")] for p, e in rep.energy.items()]
    return [("table", ["profile", "basis", "ANN dynamic", "ANN total", "SNN dynamic", "SNN total",
                       "SNN range (basis)", "status"], energy, ["text", "text"] + ["J"] * 5 + ["text"]),
            ("table", ["profile", "ANN/SNN dynamic", "ANN/SNN total", "break-even rate", "SNN latency",
                       "SNN CO2e", "ANN CO2e"], ratios, ["text", "number", "number", "number", "s", "g", "g"])]


CONSTANT_UNITS = {"peak_flops": (1.0, "FLOP/s"), "mem_bw": (1.0, "B/s"), "bytes_per_value": (1.0, "B")}


def _constant_unit(key: str) -> tuple[float, str] | None:
    """(scale, SI unit) of a profile constant, from its name (``e_*`` joules, ``*_w`` watts,
    ``*_s`` seconds, ``*_kg`` grams x 1000); None for plain numbers."""
    if key in CONSTANT_UNITS:
        return CONSTANT_UNITS[key]
    for test, unit in ((key.startswith("e_"), (1.0, "J")), (key.endswith("_w"), (1.0, "W")),
                       (key.endswith("_s"), (1.0, "s")), (key.endswith("_kg"), (1e3, "g"))):
        if test:
            return unit
    return None


def _constant(key: str, v: float, hi: float | None = None) -> str:
    """A profile constant (or, with ``hi``, the range ``v`` to ``hi``) in its unit."""
    u = _constant_unit(key)
    if u is not None:
        return render.si(u[0] * v, u[1]) if hi is None else render.si_range(u[0] * v, u[0] * hi, u[1])
    one = lambda x: f"{x:,.0f}" if float(x).is_integer() else f"{x:.3g}"  # noqa: E731
    return one(v) if hi is None else f"{one(v)} to {one(hi)}"


def _profile_blocks(rep: EnergyReport, h: Any) -> list[Block]:
    """Every profile's constants with their values, ranges and sources."""
    blocks: list[Block] = []
    for p, d in rep.profiles.items():
        cal = d.get("calibrated", {})
        rng = d.get("ranges", {})
        blocks += [h(f"{p} ({d['kind']}; tiers: {', '.join(d.get('tiers', ['compute']))})", 1), ("p", d["description"]),
                   ("table", ["constant", "value", "range", "source"],
                    [[f"`{k}`", _constant(k, v), _constant(k, *rng[k]) if k in rng else None,
                      d["sources"][k] + (f" (calibrated on {cal[k]})" if k in cal else "")]
                     for k, v in d["values"].items()], ["text", "value", "value", "text"])]
    return blocks


def _totals_blocks(t: Totals) -> list[Block]:
    """The network's counts per inference (human names), its shares and its firing rate."""
    d = t.to_dict()
    counts = [[COUNT_LABELS.get(k, k.replace("_", " ")), v] for k, v in d.items()
              if k not in RATE_LABELS and k not in ("timesteps", "encoding", "n_samples", "firing_rate")
              and isinstance(v, (int, float)) and not isinstance(v, bool)]
    shares = [[label, d[k]] for k, label in RATE_LABELS.items() if d.get(k) is not None]
    return [("table", ["count", "per inference"], counts, ["text", "count"]),
            ("table", ["share", "value"], shares, ["text", "percent"]),
            ("p", f"Mean firing rate of the IF neurons: {fmt(t.firing_rate)} spikes per neuron per step.")]


def energy_blocks(rep: EnergyReport, level: int = 2, figures: Sequence[Block] = (),
                  brief: bool = False) -> list[Block]:
    """The energy section of a report as blocks (:mod:`snn.render`): the one renderer of
    an energy report, used by a run's report (:mod:`snn.report`), by
    :meth:`EnergyReport.markdown`/:meth:`EnergyReport.to_html` and by ``snn energy``.

    ``level``: the heading level of its subsections (a run report nests them under its
    "Energy" heading); ``figures``: ``img`` blocks shown after the ANN vs SNN tables.
    ``brief``: only the per-layer tables (with totals), the ANN vs SNN tables and one line
    of context (what :meth:`EnergyReport.table` prints).
    """
    t = rep.totals
    h = lambda text, extra=0: render.heading(level + extra, text)  # noqa: E731
    if brief:
        return [*_layer_tables(rep), *_profile_tables(rep),
                ("p", f"per inference, T={t.timesteps}, {t.encoding} encoding, {t.n_samples} samples, batch "
                      f"{rep.meta.get('batch_size', 1)} on GPUs/CPUs; dynamic = compute + runtime power, total = "
                      f"dynamic + idle/static power ('{render.NONE}': the profile has no platform tier); memory "
                      f"accesses SNN {t.memory_accesses:,.0f}, ANN {t.ann_memory_accesses:,.0f}; measured firing "
                      f"rate {fmt(t.firing_rate)} spikes/neuron/step")] + _early_exit_blocks(rep, h, brief=True)
    blocks: list[Block] = [
        ("p", f"T = {t.timesteps} steps, {t.encoding} encoding, {t.n_samples} samples, backend "
              f"{rep.meta.get('backend', '?')}, batch {rep.meta.get('batch_size', 1)} on GPUs/CPUs. All figures per "
              "inference, estimated from operation counts x the profiles' constants unless marked measured."),
        h("ANN vs SNN per profile"),
        ("p", "Dynamic energy = compute + runtime/management power over the run; total energy adds the idle/static "
              f"power over the same wall time ('{render.NONE}': no platform tier in the profile). The range is the "
              "SNN's energy on the basis column's energy with every constant at the ends of its published range."),
        *_profile_tables(rep)[:1],
        ("p", "ANN/SNN = ANN energy / SNN energy (above 1 the SNN is cheaper); break-even rate = the mean IF firing "
              "rate (spikes per neuron per step) at which the SNN's energy equals the ANN's on the basis energy; "
              "CO2e on the same basis; latency = one inference (event chips) or one call of the batch (GPUs/CPUs)."),
        *_profile_tables(rep)[1:], *figures,
        h("Totals"), *_totals_blocks(t),
        h("Per layer"), *_layer_tables(rep),
    ]
    ps = rep.per_step
    if ps is not None:
        acc = ps.get("accuracy")
        idx = sorted({0, len(ps["timesteps"]) - 1} | {int(2**k) - 1 for k in range(20)
                                                    if 2**k <= len(ps["timesteps"])})
        basis = {p: rep.energy[p]["basis"] for p in ps["snn_dynamic_j"]}
        blocks += [h("Energy and accuracy per timestep"), *render.split_table(
                   ("table", ["T", "accuracy"] + [f"SNN energy, {p} ({b})" for p, b in basis.items()],
                    [[ps["timesteps"][i], acc[i] if acc else None] + [ps[f"snn_{b}_j"][p][i] for p, b in basis.items()]
                     for i in idx], ["count", "percent"] + ["J"] * len(basis)), keep=2)]
        if ps.get("cheapest"):
            blocks += [("p", f"Cheapest T reaching accuracy {100 * ps['target_accuracy']:.2f}%:"),
                       ("ul", [f"{p}: " + (f"T = {c['timesteps']}, accuracy {100 * c['accuracy']:.2f}%, "
                                           f"{render.si(c['energy_j'], 'J')} ({c['basis']})"
                                           if c else "not reached") for p, c in ps["cheapest"].items()])]
    blocks += _early_exit_blocks(rep, h)
    if rep.measurements:
        blocks += [h("Measurements"), ("table", [k.replace("_", " ") for k in rep.measurements[0]],
                                       [[fmt(v) for v in r.values()] for r in rep.measurements])]
    c = rep.carbon
    blocks += [h("Carbon"),
               ("p", f"grid {fmt(c['grid_g_per_kwh'])} gCO2e/kWh ({c['sources']['grid_g_per_kwh']}), PUE "
                     f"{fmt(c['pue'])} ({c['sources']['pue']}); CO2e of each profile's basis energy."),
               h("Assumptions"), ("ul", list(rep.assumptions)),
               h("Profiles and sources"), *_profile_blocks(rep, h)]
    return blocks


def _early_exit_blocks(rep: EnergyReport, h: Any, brief: bool = False) -> list[Block]:
    """The early-exit section (:mod:`snn.early_exit`): accuracy, exit steps, energy saved."""
    ee = rep.early_exit
    if not ee:
        return []
    acc = f"accuracy {100 * ee['accuracy']:.2f} % (all {ee['max_steps']} steps: {100 * ee['full_accuracy']:.2f} %)" \
        if ee.get("accuracy") is not None else "no labels"
    line = (f"Early exit (beta = {fmt(ee['beta'])}, at most {ee['max_steps']} steps, {ee['n_samples']} samples): "
            f"{acc}; mean {fmt(ee['mean_steps'])} steps, median {fmt(ee['median_steps'])}; energy saved "
            + (", ".join(f"{p} {100 * e.get('saved_total', e['saved_dynamic']):.1f} % "
                         f"({'total' if 'saved_total' in e else 'dynamic'})" for p, e in ee["energy"].items())
               or "not priced"))
    if brief:
        return [("p", line)]
    rows = [[p] + [e.get(f"{k}_{b}_j") for b in ("dynamic", "total") for k in ("early_exit", "full")]
            + [e["saved_dynamic"], e.get("saved_total")] for p, e in ee["energy"].items()]
    hist = ee["steps_histogram"]
    return [h("Early exit"),
            ("p", line + ". Rule (snn.early_exit): a sample stops after step t once its leading output a beats "
                  "every other class c by more than beta x (steps left) x D[a, c], D being the largest change of "
                  "the readout gap one step of spikes can bring; beta = 1 keeps every prediction of the full run. "
                  "Energy: each group of samples exiting at the same step re-simulated for its steps and priced "
                  "like the rest of this report."),
            ("table", ["profile", "dynamic, early exit", "dynamic, all steps", "total, early exit", "total, all steps",
                       "saved (dynamic)", "saved (total)"], rows, ["text"] + ["J"] * 4 + ["percent"] * 2),
            ("table", ["exit step", "samples"], sorted([int(k), v] for k, v in hist.items()), ["count", "count"])]


# --------------------------------------------------------------------------- compare
@dataclass
class Comparison:
    """Several reports side by side: one row per (report, profile)."""

    names: list[str]
    rows: list[dict[str, Any]]

    NETWORK_COLUMNS = (("report", "report", "text"), ("T", "T", "count"), ("accuracy", "accuracy", "percent"),
                       ("synops", "SynOps", "count"), ("input_macs", "input MACs", "count"),
                       ("macs_dense", "ANN MACs", "count"), ("firing_rate", "spikes per neuron per step", "number"))
    """The per-report table: (row key, heading, column format)."""
    ENERGY_COLUMNS = (("report", "report", "text"), ("profile", "profile", "text"),
                      ("ann_dynamic_j", "ANN dynamic", "J"), ("ann_total_j", "ANN total", "J"),
                      ("snn_dynamic_j", "SNN dynamic", "J"), ("snn_total_j", "SNN total", "J"),
                      ("ratio_dynamic", "ANN/SNN dynamic", "number"), ("ratio_total", "ANN/SNN total", "number"),
                      ("break_even_rate", "break-even rate", "number"))
    """The per-(report, profile) table; a last column says which figures were measured, if any."""

    def table_blocks(self) -> list[Block]:
        """The comparison as table blocks (:mod:`snn.render`): one row per report (its
        network and counts), then one per report and profile (energy per inference)."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            seen.setdefault(r["report"], r)
        cols = list(self.ENERGY_COLUMNS)
        measured = any(not r["estimated"] for r in self.rows)
        energy = [[r.get(k) for k, _, _ in cols] + (["estimated" if r["estimated"] else "measured"] if measured else [])
                  for r in self.rows]
        return [("table", [h for _, h, _ in self.NETWORK_COLUMNS],
                 [[r.get(k) for k, _, _ in self.NETWORK_COLUMNS] for r in seen.values()],
                 [f for _, _, f in self.NETWORK_COLUMNS]),
                ("table", [h for _, h, _ in cols] + (["status"] if measured else []), energy,
                 [f for _, _, f in cols] + (["text"] if measured else []))]

    def table(self) -> str:
        return render.text(self.table_blocks())

    def __str__(self) -> str:
        return self.table()

    def markdown(self) -> str:
        return render.markdown([("h1", "Energy reports compared"), *self.table_blocks()])

    def to_markdown(self, path: str | Path) -> Path:
        atomic_write_text(path, self.markdown())
        return Path(path)

    def to_json(self, path: str | Path) -> Path:
        atomic_write_text(path, json.dumps(jsonable({"reports": self.names, "rows": self.rows}), indent=1))
        return Path(path)


def _load_report(item: Any) -> tuple[str, EnergyReport]:
    if isinstance(item, EnergyReport):
        return item.meta.get("name", "report"), item
    p = Path(item)
    if p.is_dir():
        found = sorted(p.glob("energy*.json")) or sorted(p.glob("**/energy*.json"))
        if not found:
            raise SnnError(f"{p} holds no energy report (energy*.json)")
        p = found[0]
    rep = EnergyReport.from_json(p)
    return rep.meta.get("name") or p.stem, rep


def compare(paths_or_reports: Iterable[Any], names: Sequence[str] | None = None) -> Comparison:
    """Put several reports (EnergyReport objects, report JSON files, or run directories
    holding ``energy*.json``) side by side; ``names``: one label per report (default: the
    name each report carries)."""
    items = list(paths_or_reports) if not isinstance(paths_or_reports, (str, Path, EnergyReport)) \
        else [paths_or_reports]
    if not items:
        raise SnnError("compare needs at least one report")
    if names is not None and len(names) != len(items):
        raise SnnError(f"compare: {len(names)} names for {len(items)} reports")
    labels, rows = [], []
    for i, it in enumerate(items):
        name, rep = _load_report(it)
        name = names[i] if names is not None else name
        labels.append(name)
        acc = rep.meta.get("accuracy")
        t = rep.totals
        for p, e in rep.energy.items():
            rows.append({"report": name, "T": t.timesteps, "accuracy": acc, "synops": t.synops,
                         "input_macs": t.input_macs, "macs_dense": t.macs_dense, "firing_rate": t.firing_rate,
                         "profile": p, **{k: e.get(k) for k in ("ann_dynamic_j", "ann_total_j", "snn_dynamic_j",
                                                                "snn_total_j", "ratio_dynamic", "ratio_total",
                                                                "break_even_rate")},
                         "estimated": e["estimated"]})
    return Comparison(labels, rows)
