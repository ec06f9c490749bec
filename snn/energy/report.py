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

LAYER_COLUMNS = (("node", "node"), ("kind", "kind"), ("synops", "SynOps"), ("input_macs", "input MACs"),
                 ("macs_dense", "ANN MACs"), ("macs_effective", "ANN eff. MACs"), ("neuron_updates", "neuron upd."),
                 ("spikes", "spikes"), ("firing_rate", "rate/step"))


def fmt(v: Any) -> str:
    """Three significant digits; '-' for None."""
    if v is None:
        return "-"
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
        """Plots as PNG bytes, keyed by caption: per-layer SynOps, firing rates, energy vs
        accuracy (or vs T)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out: dict[str, bytes] = {}
        syn = [r for r in self.layers if r["synops"] or r["input_macs"]]
        if syn:
            fig, ax = plt.subplots(figsize=(7, 3.2))
            names = [r["node"] for r in syn]
            ax.bar(names, [r["synops"] for r in syn], label="SynOps")
            ax.bar(names, [r["input_macs"] for r in syn], bottom=[r["synops"] for r in syn], label="input MACs")
            ax.set_ylabel("per inference")
            ax.set_title("Synaptic operations per layer")
            ax.legend()
            ax.tick_params(axis="x", rotation=45)
            out["Synaptic operations per layer"] = _png(fig)
        fr = [r for r in self.layers if r.get("firing_rate") is not None]
        if fr:
            fig, ax = plt.subplots(figsize=(7, 3.2))
            ax.bar([r["node"] for r in fr], [r["firing_rate"] for r in fr], color="tab:orange")
            ax.set_ylabel("spikes / neuron / step")
            ax.set_title("Firing rates")
            ax.tick_params(axis="x", rotation=45)
            out["Firing rates per layer"] = _png(fig)
        ps = self.per_step
        if ps is not None:
            fig, ax = plt.subplots(figsize=(7, 3.6))
            for p in ps["snn_dynamic_j"]:
                basis = self.energy[p]["basis"]
                ys = ps[f"snn_{basis}_j"][p]
                if ps.get("accuracy"):
                    ax.plot(ys, ps["accuracy"], label=f"{p} ({basis})")
                else:
                    ax.plot(ps["timesteps"], ys, label=f"{p} ({basis})")
            ax.set_xscale("log")
            if ps.get("accuracy"):
                ax.set_xlabel("SNN energy per inference up to step T (J; total or dynamic, as labelled)")
                ax.set_ylabel("accuracy at step T")
                ax.set_title("Accuracy vs energy (one point per timestep)")
            else:
                ax.set_yscale("log")
                ax.set_xlabel("timesteps")
                ax.set_ylabel("J per inference (total or dynamic, as labelled)")
            ax.legend(fontsize=7)
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
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- the energy section
def _layer_table(rep: EnergyReport) -> Block:
    """Counts and SNN joules per inference of every layer, and the totals."""
    profs = [p for p, e in rep.energy.items() if e.get("estimated", True)]
    rows = [[fmt(r.get(k)) for k, _ in LAYER_COLUMNS] + [fmt(r.get("energy_j", {}).get(p)) for p in profs]
            for r in rep.layers]
    rows.append(["TOTAL", ""] + [fmt(getattr(rep.totals, k)) for k, _ in LAYER_COLUMNS[2:]]
                + [fmt(rep.energy[p]["snn_dynamic_j"]) for p in profs])
    return ("table", [h for _, h in LAYER_COLUMNS] + [f"compute J {p}" for p in profs], rows)


def _profile_table(rep: EnergyReport) -> Block:
    """ANN vs SNN energy per inference on every profile."""
    carbon = rep.carbon.get("per_profile", {})
    rows = []
    for p, e in rep.energy.items():
        rng = e.get(f"snn_{e['basis']}_range")
        rows.append([p, fmt(e.get("ann_dynamic_j")), fmt(e.get("ann_total_j")), fmt(e.get("snn_dynamic_j")),
                     fmt(e.get("snn_total_j")), f"{fmt(rng[0])} - {fmt(rng[1])}" if rng else "-",
                     fmt(e.get("snn_latency_s")), fmt(e.get("ratio_dynamic")), fmt(e.get("ratio_total")),
                     fmt(e.get("break_even_rate")), fmt(carbon.get(p, {}).get("snn_g")),
                     fmt(carbon.get(p, {}).get("ann_g")), e["basis"],
                     "estimated" if e.get("estimated", True) else f"measured ({e.get('device', '?')})"])
    return ("table", ["profile", "ANN dyn J", "ANN total J", "SNN dyn J", "SNN total J", "SNN range J (basis)",
                      "SNN latency s", "ANN/SNN dyn", "ANN/SNN total", "break-even rate", "SNN gCO2e",
                      "ANN gCO2e", "basis", "status"], rows)


def energy_blocks(rep: EnergyReport, level: int = 2, figures: Sequence[Block] = (),
                  brief: bool = False) -> list[Block]:
    """The energy section of a report as blocks (:mod:`snn.render`): the one renderer of
    an energy report, used by a run's report (:mod:`snn.report`), by
    :meth:`EnergyReport.markdown`/:meth:`EnergyReport.to_html` and by ``snn energy``.

    ``level``: the heading level of its subsections (a run report nests them under its
    "Energy" heading); ``figures``: ``img`` blocks shown after the ANN vs SNN table.
    ``brief``: only the per-layer table (with totals), the ANN vs SNN table and one line
    of context (what :meth:`EnergyReport.table` prints).
    """
    t = rep.totals
    h = lambda text, extra=0: render.heading(level + extra, text)  # noqa: E731
    if brief:
        return [_layer_table(rep), _profile_table(rep),
                ("p", f"per inference, T={t.timesteps}, {t.encoding} encoding, {t.n_samples} samples, batch "
                      f"{rep.meta.get('batch_size', 1)} on GPUs/CPUs; dynamic = compute + runtime power, total = "
                      f"dynamic + idle/static power ('-': the profile has no platform tier); memory accesses SNN "
                      f"{fmt(t.memory_accesses)}, ANN {fmt(t.ann_memory_accesses)}; measured firing rate "
                      f"{fmt(t.firing_rate)} spikes/neuron/step")] + _early_exit_blocks(rep, h, brief=True)
    blocks: list[Block] = [
        ("p", f"T = {t.timesteps} steps, {t.encoding} encoding, {t.n_samples} samples, backend "
              f"{rep.meta.get('backend', '?')}, batch {rep.meta.get('batch_size', 1)} on GPUs/CPUs. All figures per "
              "inference, estimated from operation counts x the profiles' constants unless marked measured."),
        h("ANN vs SNN per profile"),
        ("p", "Dynamic J = compute + runtime/management power over the run; total J adds the idle/static power "
              "over the same wall time ('-': no platform tier in the profile). ANN/SNN = ANN J / SNN J (above 1 "
              "the SNN is cheaper); break-even rate = the mean IF firing rate (spikes/neuron/step) at which SNN J "
              "= ANN J on the basis column's energy; gCO2e on the same basis; latency = one inference (event "
              "chips) or one call of the batch (GPUs/CPUs)."),
        _profile_table(rep), *figures,
        h("Totals"),
        ("table", ["count", "value"], [[k, fmt(v)] for k, v in t.to_dict().items()
                                       if not isinstance(v, (dict, list, tuple))]),
        h("Per layer"), _layer_table(rep),
    ]
    ps = rep.per_step
    if ps is not None:
        acc = ps.get("accuracy")
        idx = sorted({0, len(ps["timesteps"]) - 1} | {int(2**k) - 1 for k in range(20)
                                                    if 2**k <= len(ps["timesteps"])})
        basis = {p: rep.energy[p]["basis"] for p in ps["snn_dynamic_j"]}
        blocks += [h("Energy and accuracy per timestep"),
                   ("table", ["T", "accuracy"] + [f"SNN {b} J {p}" for p, b in basis.items()],
                    [[ps["timesteps"][i], fmt(acc[i]) if acc else "-"]
                     + [fmt(ps[f"snn_{b}_j"][p][i]) for p, b in basis.items()] for i in idx])]
        if ps.get("cheapest"):
            blocks += [("p", f"Cheapest T reaching accuracy {fmt(ps['target_accuracy'])}:"),
                       ("ul", [f"{p}: " + (f"T = {c['timesteps']}, accuracy {fmt(c['accuracy'])}, "
                                           f"{fmt(c['energy_j'])} J ({c['basis']})"
                                           if c else "not reached") for p, c in ps["cheapest"].items()])]
    blocks += _early_exit_blocks(rep, h)
    if rep.measurements:
        blocks += [h("Measurements"), ("table", list(rep.measurements[0]),
                                       [[fmt(v) for v in r.values()] for r in rep.measurements])]
    c = rep.carbon
    blocks += [h("Carbon"),
               ("p", f"grid {fmt(c['grid_g_per_kwh'])} gCO2e/kWh ({c['sources']['grid_g_per_kwh']}), PUE "
                     f"{fmt(c['pue'])} ({c['sources']['pue']}); gCO2e of each profile's basis energy."),
               h("Assumptions"), ("ul", list(rep.assumptions)),
               h("Profiles and sources")]
    for p, d in rep.profiles.items():
        cal = d.get("calibrated", {})
        blocks += [h(f"{p} ({d['kind']}; tiers: {', '.join(d.get('tiers', ['compute']))})", 1), ("p", d["description"]),
                   ("ul", [f"`{k}` = {fmt(v)}" + (f" (range {fmt(d['ranges'][k][0])} - {fmt(d['ranges'][k][1])})"
                                                 if k in d["ranges"] else "") + f": {d['sources'][k]}"
                           + (f" [CALIBRATED on {cal[k]}]" if k in cal else "") for k, v in d["values"].items()])]
    return blocks


def _early_exit_blocks(rep: EnergyReport, h: Any, brief: bool = False) -> list[Block]:
    """The early-exit section (:mod:`snn.early_exit`): accuracy, exit steps, energy saved."""
    ee = rep.early_exit
    if not ee:
        return []
    acc = f"accuracy {fmt(ee['accuracy'])} (all {ee['max_steps']} steps: {fmt(ee['full_accuracy'])})" \
        if ee.get("accuracy") is not None else "no labels"
    line = (f"Early exit (beta = {fmt(ee['beta'])}, at most {ee['max_steps']} steps, {ee['n_samples']} samples): "
            f"{acc}; mean {fmt(ee['mean_steps'])} steps, median {fmt(ee['median_steps'])}; energy saved "
            + (", ".join(f"{p} {100 * e.get('saved_total', e['saved_dynamic']):.1f} % "
                         f"({'total' if 'saved_total' in e else 'dynamic'})" for p, e in ee["energy"].items())
               or "not priced"))
    if brief:
        return [("p", line)]
    rows = [[p] + [fmt(e.get(f"{k}_{b}_j")) for b in ("dynamic", "total") for k in ("early_exit", "full")]
            + [f"{100 * e['saved_dynamic']:.1f} %", f"{100 * e['saved_total']:.1f} %" if "saved_total" in e else "-"]
            for p, e in ee["energy"].items()]
    hist = ee["steps_histogram"]
    return [h("Early exit"),
            ("p", line + ". Rule (snn.early_exit): a sample stops after step t once its leading output a beats "
                  "every other class c by more than beta x (steps left) x D[a, c], D being the largest change of "
                  "the readout gap one step of spikes can bring; beta = 1 keeps every prediction of the full run. "
                  "Energy: each group of samples exiting at the same step re-simulated for its steps and priced "
                  "like the rest of this report."),
            ("table", ["profile", "early-exit dyn J", "full dyn J", "early-exit total J", "full total J",
                       "saved dyn", "saved total"], rows),
            ("table", ["exit step", "samples"], [[k, v] for k, v in sorted(hist.items(), key=lambda kv: int(kv[0]))])]


# --------------------------------------------------------------------------- compare
@dataclass
class Comparison:
    """Several reports side by side: one row per (report, profile)."""

    names: list[str]
    rows: list[dict[str, Any]]

    COLUMNS = ("report", "T", "accuracy", "synops", "input_macs", "macs_dense", "firing_rate", "profile",
               "ann_dynamic_j", "ann_total_j", "snn_dynamic_j", "snn_total_j", "ratio_dynamic", "ratio_total",
               "break_even_rate", "estimated")

    def table_block(self) -> Block:
        """The comparison as one table block (:mod:`snn.render`)."""
        return ("table", list(self.COLUMNS), [[fmt(r.get(c)) for c in self.COLUMNS] for r in self.rows])

    def table(self) -> str:
        return render.text([self.table_block()])

    def __str__(self) -> str:
        return self.table()

    def markdown(self) -> str:
        return render.markdown([("h1", "Energy reports compared"), self.table_block()])

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


def compare(paths_or_reports: Iterable[Any]) -> Comparison:
    """Put several reports (EnergyReport objects, report JSON files, or run directories
    holding ``energy*.json``) side by side."""
    items = list(paths_or_reports) if not isinstance(paths_or_reports, (str, Path, EnergyReport)) \
        else [paths_or_reports]
    if not items:
        raise SnnError("compare needs at least one report")
    names, rows = [], []
    for it in items:
        name, rep = _load_report(it)
        names.append(name)
        acc = rep.meta.get("accuracy")
        t = rep.totals
        for p, e in rep.energy.items():
            rows.append({"report": name, "T": t.timesteps, "accuracy": acc, "synops": t.synops,
                         "input_macs": t.input_macs, "macs_dense": t.macs_dense, "firing_rate": t.firing_rate,
                         "profile": p, **{k: e.get(k) for k in ("ann_dynamic_j", "ann_total_j", "snn_dynamic_j",
                                                                "snn_total_j", "ratio_dynamic", "ratio_total",
                                                                "break_even_rate")},
                         "estimated": e["estimated"]})
    return Comparison(names, rows)
