"""Life-cycle accounting, from design and training to deployment and retirement: the
energy and carbon of (a) training the ANN, (b) converting it (and any extra training the
SNN needed), (c) inference at a deployment volume, and (d) the embodied carbon of the
hardware, amortised over its service life.

(a) Training: measured (RAPL/NVML through :mod:`snn.energy.measure`) where it was, else
    estimated from training FLOPs on a dense profile (``6 x MACs x samples x epochs``:
    a forward pass is 2 FLOPs per MAC and the backward pass twice that) run at its
    roofline while drawing codecarbon's 50 % of TDP; the wall time, when known, gives a
    second estimate (``seconds x`` the same power). Every figure says which it is.
(b) Conversion: the calibration forward passes (``2 x MACs x samples``) plus any extra
    training (conversion-aware fine-tuning), on the same profile.
(c) Inference: ``inferences_per_day x 365 x years`` times the energy per inference of
    the energy report (total energy where the profile has a platform tier, else dynamic).
(d) Embodied: ``embodied_kg x share``, ``share = min(1, years / service_life)`` for a
    device dedicated to the workload, or ACT's ``busy time / service life`` (Gupta et al.,
    ISCA 2022: ``CF = OP_CF + (T / LT) * E_CF``) for a shared one; a range where the
    sources disagree.

Headlines per deployment profile: inferences per joule, accuracy per joule, inferences per
gram CO2e over the whole life cycle, and the payback: the number of inferences after which
the SNN's lower energy per inference repays its extra cost (b).

gCO2e = J / 3.6e6 x PUE x grid intensity (:mod:`snn.energy.carbon`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snn import render
from snn.energy.carbon import DEFAULT_GRID_G_PER_KWH, DEFAULT_PUE, SOURCES as CARBON_SOURCES, check_carbon, grams_co2e
from snn.energy.profiles import Profile, load_profiles, resolve
from snn.errors import SnnError
from snn.util import atomic_write_text

TRAIN_RULE = "codecarbon's TDP rule: a working device draws 50 % of its TDP"


def _positive(name: str, v: Any, strict: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0 or (strict and v == 0):
        raise SnnError(f"{name} must be a number {'>' if strict else '>='} 0, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class Deployment:
    """How much the network serves: ``inferences_per_day`` for ``years``; ``dedicated``:
    the device serves only this workload (embodied share by calendar time), else its
    share is the busy time (ACT)."""

    inferences_per_day: float
    years: float
    dedicated: bool = True

    def __post_init__(self) -> None:
        _positive("deployment inferences_per_day (the deployment volume)", self.inferences_per_day)
        _positive("deployment years", self.years)

    @property
    def inferences(self) -> float:
        return self.inferences_per_day * 365.0 * self.years


@dataclass(frozen=True)
class Training:
    """What the ANN's training cost (FLOPs, wall time, measured energy if any), and the
    extra training the SNN needed beyond conversion (``extra_flops``)."""

    flops: float
    seconds: float | None = None
    measured_j: float | None = None
    measured_how: str = ""
    extra_flops: float = 0.0

    def __post_init__(self) -> None:
        _positive("training flops", self.flops)
        _positive("extra training flops", self.extra_flops, strict=False)
        if self.seconds is not None:
            _positive("training seconds", self.seconds)
        if self.measured_j is not None:
            _positive("measured training energy", self.measured_j, strict=False)

    @classmethod
    def from_macs(cls, macs: float, samples: int, epochs: int, **kwargs: Any) -> "Training":
        """Training FLOPs ``6 x MACs x samples x epochs`` (forward 2 per MAC, backward 4)."""
        return cls(flops=6.0 * _positive("macs", macs) * _positive("samples", samples) * _positive("epochs", epochs),
                   **kwargs)


@dataclass
class LifecycleReport:
    """Phases (energy, carbon, how each figure was obtained) and headline metrics per
    deployment profile; render with :meth:`markdown`, :meth:`to_html`, :meth:`to_json`."""

    phases: list[dict[str, Any]]
    per_profile: dict[str, dict[str, Any]]
    deployment: dict[str, Any]
    carbon: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "snn.LifecycleReport", "version": 1, "meta": self.meta, "deployment": self.deployment,
                "carbon": self.carbon, "phases": self.phases, "per_profile": self.per_profile, "notes": self.notes}

    def to_json(self, path: str | Path) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return Path(path)

    def blocks(self, level: int = 1) -> list[render.Block]:
        """The life-cycle report as blocks (:mod:`snn.render`)."""
        from snn.energy.report import fmt

        h = lambda text, extra=0: render.heading(level + extra, text)  # noqa: E731
        d = self.deployment
        out: list[render.Block] = [
            h(f"Life cycle: {self.meta.get('name', 'network')}"),
            ("p", f"Deployment: {fmt(d['inferences_per_day'])} inferences/day for {fmt(d['years'])} years = "
                  f"{fmt(d['inferences'])} inferences ({'dedicated device' if d['dedicated'] else 'shared device'}). "
                  f"Carbon: {fmt(self.carbon['grid_g_per_kwh'])} gCO2e/kWh, PUE {fmt(self.carbon['pue'])}."),
            h("(a) Training and (b) conversion", 1),
            ("table", ["phase", "energy", "CO2e", "how"], [[r["phase"], r["j"], r["g"], r["how"]] for r in self.phases],
             ["text", "J", "g", "text"])]
        rows = [(p, who, r) for p, e in self.per_profile.items() for who, r in (("SNN", e["snn"]), ("ANN", e["ann"]))
                if r is not None]
        out += [h("(c) Inference and (d) embodied carbon, per deployment profile", 1),
                ("table", ["profile", "network", "energy per inference", "basis", "inference energy",
                           "inference CO2e", "embodied CO2e", "embodied range", "life-cycle CO2e"],
                 [[p, who, r["j_per_inference"], r["basis"], r["inference_j"], r["inference_g"], r["embodied_g"],
                   None if r["embodied_range_g"] is None else tuple(r["embodied_range_g"]), r["lifecycle_g"]]
                  for p, who, r in rows], ["text", "text", "J", "text", "J", "g", "g", "g", "g"]),
                ("table", ["profile", "network", "inferences per joule", "accuracy per joule", "inferences per gCO2e"],
                 [[p, who, r["inferences_per_j"], r["accuracy_per_j"], r["inferences_per_g"]] for p, who, r in rows],
                 ["text", "text", "number", "number", "number"]),
                h("Payback of the SNN's extra cost", 1),
                ("ul", [f"{p}: " + (f"after {fmt(e['payback_inferences'])} inferences "
                                    f"({fmt(e['payback_days'])} days at this volume)"
                                    if e["payback_inferences"] is not None else e["payback_note"])
                        for p, e in self.per_profile.items()]),
                h("How the figures were obtained", 1), ("ul", list(self.notes))]
        return out

    def markdown(self) -> str:
        return render.markdown(self.blocks())

    def to_markdown(self, path: str | Path) -> Path:
        atomic_write_text(path, self.markdown())
        return Path(path)

    def to_html(self, path: str | Path) -> Path:
        atomic_write_text(path, render.html(self.blocks(), f"snn life cycle: {self.meta.get('name', 'network')}"))
        return Path(path)


def _phase(name: str, flops: float, measured_j: float | None, how_measured: str, seconds: float | None,
           prof: Profile, grid: float, pue: float) -> list[dict[str, Any]]:
    """Rows for one phase: measured where it was, else estimated from FLOPs (and wall time)."""
    if measured_j is not None:
        return [{"phase": name, "j": measured_j, "g": grams_co2e(measured_j, grid, pue),
                 "how": f"measured ({how_measured})", "estimated": False}]
    t = flops / (prof.get("peak_flops") * prof.get("efficiency"))
    power = 0.5 * prof.get("board_power_w")
    rows = [{"phase": name, "j": power * t, "g": grams_co2e(power * t, grid, pue), "estimated": True,
             "how": f"estimated: {flops:.3g} FLOPs at the roofline of {prof.name} ({t:.3g} s) x {power:g} W "
                    f"({TRAIN_RULE})"}]
    if seconds is not None:
        rows.append({"phase": f"{name} (wall time)", "j": power * seconds, "g": grams_co2e(power * seconds, grid, pue),
                     "estimated": True, "how": f"estimated: measured wall time {seconds:.3g} s x {power:g} W "
                                               f"({TRAIN_RULE}, {prof.name})"})
    return rows


def lifecycle(report: Any, *, deployment: Deployment, training: Training, calibration_samples: int = 0,
              train_profile: str | Profile = "xeon-e5-2630", profiles_file: str | Path | None = None,
              ann_accuracy: float | None = None, grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH,
              pue: float = DEFAULT_PUE, name: str | None = None) -> LifecycleReport:
    """The life cycle of a converted network (see the module docstring).

    ``report``: its :class:`snn.energy.EnergyReport` (the deployment profiles are the
    report's estimated profiles; accuracy from its labels). ``deployment``: volume and
    years; ``training``: the ANN's training (:meth:`Training.from_macs`, measured energy if
    any, extra training of the SNN); ``calibration_samples``: the conversion's calibration
    forward passes; ``train_profile``: the dense profile that prices training and
    conversion FLOPs where they were not measured; ``ann_accuracy``: for the ANN's
    accuracy per joule.
    """
    if not isinstance(deployment, Deployment):
        raise SnnError(f"deployment must be a snn.energy.Deployment, got {type(deployment).__name__}")
    if not isinstance(training, Training):
        raise SnnError(f"training must be a snn.energy.Training, got {type(training).__name__}")
    check_carbon(grid_g_per_kwh, pue)
    _positive("calibration_samples", calibration_samples, strict=False)
    extra = load_profiles(profiles_file) if profiles_file is not None else None
    (tprof,) = resolve([train_profile], extra)
    if tprof.kind == "event":
        raise SnnError(f"train_profile {tprof.name!r} is an event chip; training is priced on a gpu/cpu profile")
    g = lambda j: grams_co2e(j, grid_g_per_kwh, pue)  # noqa: E731
    macs = report.totals.macs_dense
    train = _phase("(a) train the ANN", training.flops, training.measured_j, training.measured_how, training.seconds,
                   tprof, grid_g_per_kwh, pue)
    conv = _phase("(b) convert: calibration passes", 2.0 * macs * calibration_samples, None, "", None, tprof,
                  grid_g_per_kwh, pue)
    if training.extra_flops:
        conv += _phase("(b) extra training of the SNN", training.extra_flops, None, "", None, tprof, grid_g_per_kwh,
                       pue)
    train_j = train[0]["j"]
    extra_j = sum(r["j"] for r in conv if "wall time" not in r["phase"])
    N = deployment.inferences
    acc = {"snn": report.meta.get("accuracy"), "ann": ann_accuracy}
    per: dict[str, dict[str, Any]] = {}
    for p, e in report.energy.items():
        if not e.get("estimated", True):
            continue
        prof = report.profiles[p]
        emb = prof["values"].get("embodied_kg")
        life = prof["values"].get("service_life_years")
        side = {}
        for who in ("snn", "ann"):
            j = e.get(f"{who}_{e['basis']}_j")
            if j is None:
                side[who] = None
                continue
            lat = e.get(f"{who}_latency_s")
            if emb is None:
                share = None
            elif deployment.dedicated:
                share = min(1.0, deployment.years / life)
            else:
                share = None if lat is None else min(1.0, N * lat / e.get("batch_size", 1) / (life * 365 * 86400))
            rng = prof["ranges"].get("embodied_kg")
            emb_g = emb * 1e3 * share if share is not None else None
            fixed_j = train_j + (extra_j if who == "snn" else 0.0)
            life_g = g(fixed_j + N * j) + (emb_g or 0.0)
            side[who] = {"j_per_inference": j, "basis": e["basis"], "inference_j": N * j, "inference_g": g(N * j),
                         "embodied_g": emb_g, "embodied_share": share,
                         "embodied_range_g": [rng[0] * 1e3 * share, rng[1] * 1e3 * share] if rng and share else None,
                         "lifecycle_j": fixed_j + N * j, "lifecycle_g": life_g, "inferences_per_j": 1.0 / j,
                         "accuracy_per_j": acc[who] / j if acc[who] is not None else None,
                         "inferences_per_g": N / life_g if life_g > 0 else None}
        saving = side["ann"]["j_per_inference"] - side["snn"]["j_per_inference"] if side["ann"] else None
        pay = extra_j / saving if saving and saving > 0 else None
        per[p] = {**side, "payback_inferences": pay,
                  "payback_days": pay / deployment.inferences_per_day if pay is not None else None,
                  "payback_note": "no ANN on this profile" if saving is None else
                  "never: the SNN costs more per inference than the ANN" if saving <= 0 else ""}
    notes = [f"Training and conversion FLOPs priced on {tprof.name} ({tprof.description}) where not measured; "
             f"{TRAIN_RULE}. FLOPs at the roofline give a lower bound on the time; the wall-time row, where "
             "the training time is known, uses the measured duration instead.",
             "Training FLOPs = 6 x MACs x samples x epochs (forward 2 FLOPs per MAC, backward twice the forward); "
             "the ANN's training is shared by both networks, the conversion is the SNN's extra cost.",
             "Inference energy per profile from the energy report (basis: total energy where the profile has a "
             "platform tier, else dynamic).",
             "Embodied carbon: each profile's embodied_kg (sources in the energy report) x "
             + ("min(1, years / service life): a device dedicated to this workload" if deployment.dedicated else
                "busy time / service life (ACT, Gupta et al. ISCA 2022): a shared device") + "; '-' where no "
             "embodied figure is sourced for the profile.",
             f"Carbon: {CARBON_SOURCES['grid_g_per_kwh']}; {CARBON_SOURCES['pue']} (settable).",
             "Payback: the conversion's cost (b) / (ANN J - SNN J per inference)."]
    return LifecycleReport(
        phases=train + conv, per_profile=per,
        deployment={"inferences_per_day": deployment.inferences_per_day, "years": deployment.years,
                    "inferences": N, "dedicated": deployment.dedicated},
        carbon={"grid_g_per_kwh": grid_g_per_kwh, "pue": pue}, notes=notes,
        meta={"name": name or report.meta.get("name", "network"), "snn_accuracy": acc["snn"],
              "ann_accuracy": ann_accuracy, "train_profile": tprof.name, "training_flops": training.flops,
              "training_seconds": training.seconds})
