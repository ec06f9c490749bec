"""Hardware profiles: the constants of the pricing tiers, each with its source, a range
where sources disagree, and a mark where a constant was calibrated on a measurement.

A profile is data: ``values`` (SI units: J, W, s, FLOP/s, B/s, kg CO2e, years),
``sources`` (one string per value), ``ranges`` (``(low, high)`` where sources disagree)
and ``calibrated`` (constant -> the measurement it was fitted to). The built-in profiles
are in :mod:`snn.energy.devices`. A kind's constants come in tiers (:data:`TIERS`):

* ``compute`` (required): per-operation energies (``event``) or a roofline (``gpu``,
  ``cpu``, ``vpu``: peak FLOP/s, memory bandwidth, board power);
* ``platform`` (optional, all of its required constants or none): the time-driven terms
  of real hardware (static/idle power, runtime power, a fixed time per step or per call,
  the core mapping of event chips); without it a profile prices dynamic energy only
  and its total is unknown;
* ``embodied`` (optional): manufacturing carbon and service life, for the life cycle.

A profile that gives some but not all required constants of a tier is an error naming
the profile, the tier and the missing constants; an unknown key is an error; an optional
constant that is absent takes its documented default (:data:`DEFAULTS`), never a silent 0.

Custom profiles: :func:`load_profiles` reads YAML or JSON::

    profiles:
      my-chip:
        kind: event
        description: my accelerator
        e_mac: {value: 1.0e-12, source: "datasheet p. 3", range: [0.8e-12, 1.2e-12]}
        e_ac: 2.0e-13          # a bare number is accepted; its source is then "user-supplied"
        e_neuron: 5.0e-13
        t_host_step_s: {value: 3.0e-4, source: "my measurement", calibrated_on: "my board, 2024"}
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snn.errors import SnnError


@dataclass(frozen=True)
class Tier:
    """The constants of one pricing tier: ``required`` (all or none, for an optional tier)
    and ``optional`` (with :data:`DEFAULTS`)."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


_EMBODIED = Tier(("embodied_kg", "service_life_years"))
_DENSE = {
    "compute": Tier(("peak_flops", "mem_bw", "bytes_per_value", "board_power_w"), ("flops_per_neuron_update",)),
    "platform": Tier(("active_power_w", "idle_power_w", "t_call_s", "t_kernel_s"), ("efficiency", "host_power_w")),
    "embodied": _EMBODIED,
}
TIERS: dict[str, dict[str, Tier]] = {
    "event": {
        "compute": Tier(("e_mac", "e_ac", "e_neuron"), ("e_spike", "e_mem", "event_driven")),
        "platform": Tier(("static_power_w", "runtime_power_w", "t_host_step_s", "t_sync_s", "t_ac_s", "t_neuron_s",
                          "neurons_per_core", "cores_per_chip")),
        "embodied": _EMBODIED,
    },
    "gpu": _DENSE, "cpu": _DENSE, "vpu": _DENSE,
}
"""Kind -> tier -> constants. ``event``: event-driven chips and per-op estimates (SynOps,
MACs, neuron updates, spikes, memory accesses); ``gpu``/``cpu``/``vpu``: dense processors
(a roofline, a fixed cost per call and per kernel, idle power, the batch size)."""
KINDS = tuple(TIERS)
OPTIONAL_TIERS = ("platform", "embodied")
DEFAULTS = {
    "e_spike": 0.0,                   # spikes not priced apart (per-event figures include them)
    "e_mem": 0.0,                     # memory not priced apart (per-event figures include it)
    "event_driven": 1.0,              # 1: SynOps; 0: every connection at every step (a CPU)
    "flops_per_neuron_update": 0.0,   # neuron updates and ReLUs not counted as FLOPs
    "efficiency": 1.0,                # achieved fraction of the roofline
    "host_power_w": 0.0,              # no host power attributed to the device
}
POSITIVE = ("peak_flops", "mem_bw", "bytes_per_value", "neurons_per_core", "cores_per_chip", "efficiency",
            "service_life_years")
AT_MOST_ONE = ("efficiency", "event_driven")


@dataclass(frozen=True)
class Profile:
    """One hardware profile (see the module docstring); ``get(k)`` returns a constant."""

    name: str
    kind: str
    description: str
    values: dict[str, float]
    sources: dict[str, str]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    calibrated: dict[str, str] = field(default_factory=dict)

    def has(self, tier: str) -> bool:
        """True when the profile gives the (optional) ``tier``."""
        return all(k in self.values for k in TIERS[self.kind][tier].required)

    def get(self, key: str) -> float:
        """A constant; an optional one that is absent takes its default; a required one
        that is absent is an error naming the profile, the constant and its tier."""
        if key in self.values:
            return self.values[key]
        if key in DEFAULTS:
            return DEFAULTS[key]
        tier = next((t for t, spec in TIERS[self.kind].items() if key in spec.required), None)
        if tier is None:
            raise SnnError(f"profile {self.name!r}: {key!r} is no constant of kind {self.kind!r}")
        raise SnnError(f"profile {self.name!r}: the {tier} tier of kind {self.kind!r} needs {key}, which the "
                       "profile does not give")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description, "values": dict(self.values),
                "sources": dict(self.sources), "ranges": {k: list(v) for k, v in self.ranges.items()},
                "calibrated": dict(self.calibrated), "tiers": [t for t in TIERS[self.kind]
                                                               if t == "compute" or self.has(t)]}


def check_tiers(name: str, kind: str, keys: set[str]) -> None:
    """Raise :class:`SnnError` unless ``keys`` are constants of ``kind``, the compute tier
    is complete, and every optional tier given is complete."""
    tiers = TIERS[kind]
    allowed = {k for t in tiers.values() for k in t.required + t.optional}
    unknown = sorted(keys - allowed)
    if unknown:
        hint = " (the batch size is an argument: energy_report(batch_size=...), energy.batch_size)" \
            if "batch_size" in unknown else ""
        raise SnnError(f"profile {name!r}: unknown key(s) {', '.join(unknown)} (no tier of kind {kind!r} uses "
                       f"them){hint}; valid: {', '.join(sorted(allowed | {'kind', 'description'}))}")
    for tier, spec in tiers.items():
        given = keys & set(spec.required + spec.optional)
        missing = [k for k in spec.required if k not in keys]
        if missing and (tier == "compute" or given):
            raise SnnError(f"profile {name!r}: the {tier} tier of kind {kind!r} needs {', '.join(missing)} "
                           f"(it needs {', '.join(spec.required)}" + (f"; given: {', '.join(sorted(given))}"
                                                                      if given else "") + ")")


def _check_number(pname: str, key: str, v: Any) -> float:
    """A finite number >= 0; numeric strings are accepted (PyYAML reads ``1e-12`` as a string)."""
    try:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError
        v = float(v)
    except ValueError:
        raise SnnError(f"profile {pname!r}: {key} must be a number, got {v!r}") from None
    if not math.isfinite(v) or v < 0:
        raise SnnError(f"profile {pname!r}: {key} must be a finite number >= 0, got {v}")
    base = key.split(".")[0]
    if base in POSITIVE and v == 0:
        raise SnnError(f"profile {pname!r}: {key} must be > 0")
    if base in AT_MOST_ONE and v > 1:
        raise SnnError(f"profile {pname!r}: {key} must be at most 1, got {v}")
    return v


def make_profile(name: str, spec: dict[str, Any]) -> Profile:
    """Build and validate a profile from a dict (see the module docstring for the format)."""
    if not isinstance(spec, dict):
        raise SnnError(f"profile {name!r} must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind", "event")
    if kind not in KINDS:
        raise SnnError(f"profile {name!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    consts = {k: v for k, v in spec.items() if k not in ("kind", "description")}
    check_tiers(name, kind, set(consts))
    values, sources, ranges, calibrated = {}, {}, {}, {}
    for k, v in consts.items():
        if isinstance(v, dict):
            extra = set(v) - {"value", "source", "range", "calibrated_on"}
            if extra or "value" not in v:
                raise SnnError(f"profile {name!r}: {k} must be a number or {{value, source, range, calibrated_on}}, "
                               f"got {v!r}")
            values[k] = _check_number(name, k, v["value"])
            sources[k] = str(v.get("source") or "user-supplied (no source given)")
            if v.get("calibrated_on"):
                calibrated[k] = str(v["calibrated_on"])
            if "range" in v:
                r = v["range"]
                if not isinstance(r, (list, tuple)) or len(r) != 2:
                    raise SnnError(f"profile {name!r}: {k}.range must be [low, high], got {r!r}")
                lo, hi = (_check_number(name, f"{k}.range", x) for x in r)
                if lo > hi:
                    raise SnnError(f"profile {name!r}: {k}.range low {lo} > high {hi}")
                if not lo <= values[k] <= hi:
                    raise SnnError(f"profile {name!r}: {k} = {values[k]} lies outside its range [{lo}, {hi}]")
                ranges[k] = (lo, hi)
        else:
            values[k] = _check_number(name, k, v)
            sources[k] = "user-supplied (no source given)"
    return Profile(name, kind, str(spec.get("description", "user profile")), values, sources, ranges, calibrated)


def load_profiles(path: str | Path) -> dict[str, Profile]:
    """Read custom profiles from a YAML or JSON file with a top-level ``profiles`` mapping;
    every error (:class:`SnnError`) names the file, and the profile and key at fault."""
    path = Path(path)
    if not path.exists():
        raise SnnError(f"no such profile file: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SnnError(f"{path}: cannot read it as text ({' '.join(str(e).split())})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError: one line, where and what
        mark = getattr(e, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (getattr(e, "lineno", None), getattr(e, "colno", None))
        what = getattr(e, "problem", None) or getattr(e, "msg", None) or " ".join(str(e).split())
        raise SnnError(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}"
                       + (f" at line {line}, column {col}" if line else "") + f": {what}") from e
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict) or not data["profiles"]:
        raise SnnError(f"{path}: expected a top-level 'profiles' mapping of name -> profile")
    try:
        return {str(n): make_profile(str(n), s) for n, s in data["profiles"].items()}
    except SnnError as e:
        raise SnnError(f"{path}: {e}") from None


UNITS = {"peak_flops": "FLOP/s", "mem_bw": "B/s", "bytes_per_value": "B", "board_power_w": "W",
         "flops_per_neuron_update": "FLOP", "neurons_per_core": "neurons", "cores_per_chip": "cores",
         "embodied_kg": "kg CO2e", "service_life_years": "years", "efficiency": "", "event_driven": ""}
"""Unit of each constant that its name does not give (``e_*``: J, ``*_w``: W, ``*_s``: s)."""


def unit(key: str) -> str:
    """The SI unit of constant ``key``."""
    if key in UNITS:
        return UNITS[key]
    return "J" if key.startswith("e_") else "W" if key.endswith("_w") else "s" if key.endswith("_s") else ""


def constants(profile: Profile) -> list[dict[str, Any]]:
    """Every constant the profile's tiers use, in tier order: ``{tier, key, value, unit,
    source, range, calibrated}``; an optional constant the profile leaves out is listed
    with its default (source ``"default"``); a tier the profile does not give is left out."""
    rows = []
    for tier, spec in TIERS[profile.kind].items():
        if tier != "compute" and not profile.has(tier):
            continue
        for key in spec.required + spec.optional:
            given = key in profile.values
            rows.append({"tier": tier, "key": key, "value": profile.get(key), "unit": unit(key),
                         "source": profile.sources[key] if given else "default (not given by the profile)",
                         "range": profile.ranges.get(key), "calibrated": profile.calibrated.get(key)})
    return rows


def resolve(hardware: Any, extra: dict[str, Profile] | None = None) -> list[Profile]:
    """Profiles named in ``hardware`` (names, :class:`Profile` objects, or one name);
    an unknown name lists the known ones."""
    from snn.energy.devices import PROFILES

    if isinstance(hardware, (str, Profile)):
        hardware = [hardware]
    known = {**PROFILES, **(extra or {})}
    out = []
    for h in hardware:
        if isinstance(h, Profile):
            out.append(h)
        elif h in known:
            out.append(known[h])
        else:
            raise SnnError(f"unknown hardware profile {h!r}; known: {', '.join(known)} "
                           "(add your own with snn.energy.load_profiles(path))")
    if not out:
        raise SnnError(f"no hardware profile given; known: {', '.join(known)}")
    return out
