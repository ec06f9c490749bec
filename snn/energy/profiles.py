"""Hardware profiles: per-operation energies and platform constants, each with its source
(``/work/shared/ENERGY_SOURCES.md`` collects them), and a range where sources disagree.

A profile is data: ``values`` (SI units: J, W, s, FLOP/s, B/s), ``sources`` (one string
per value) and ``ranges`` (``(low, high)`` per value where sources disagree). Kinds:

* ``"event"``: an event-driven chip or accelerator (45 nm estimates, Loihi, TrueNorth,
  SpiNNaker): the SNN costs per synaptic op, per neuron update, per emitted spike, per
  memory access; a platform tier adds ``static_power_w`` x latency, latency per step =
  ``t_step_s + (synops * t_ac_s + neuron_updates * t_neuron_s) / parallel_units``.
  With ``event_driven: 0`` (a CPU), the SNN computes every connection at every step.
* ``"gpu"``: a roofline at board power: ``E = board_power_w * max(FLOPs / peak_flops,
  bytes / mem_bw)``, a lower bound (full utilisation, no launch or idle overhead); the
  SNN runs densely (a GPU does not skip zeros).

Custom profiles: :func:`load_profiles` reads YAML or JSON::

    profiles:
      my-chip:
        kind: event
        description: my accelerator
        e_mac: {value: 1.0e-12, source: "datasheet p. 3", range: [0.8e-12, 1.2e-12]}
        e_ac: 2.0e-13          # a bare number is accepted; its source is then "user-supplied"
        e_neuron: 5.0e-13
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snn.errors import SnnError

KINDS = ("event", "gpu")
# The values each kind's pricing tiers (snn.energy.pricing) read, and nothing else: a
# profile key that no tier uses is an error, not a silently ignored number
# (tests/test_energy_report.py checks these sets against what pricing reads).
REQUIRED = {"event": ("e_mac", "e_ac", "e_neuron"),
            "gpu": ("peak_flops", "board_power_w", "mem_bw", "bytes_per_value")}
OPTIONAL = {"event": ("e_spike", "e_mem", "static_power_w", "t_step_s", "t_ac_s", "t_neuron_s", "parallel_units",
                      "event_driven"),
            "gpu": ("batch_size", "flops_per_neuron_update")}
POSITIVE = ("peak_flops", "mem_bw", "bytes_per_value", "parallel_units", "batch_size")


@dataclass(frozen=True)
class Profile:
    """One hardware profile; ``get(k)`` returns a value (0 when an optional one is absent)."""

    name: str
    kind: str
    description: str
    values: dict[str, float]
    sources: dict[str, str]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def get(self, key: str) -> float:
        """A value (the default where an optional one is absent)."""
        return self.values.get(key, 1.0 if key in ("event_driven", "parallel_units") else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description, "values": dict(self.values),
                "sources": dict(self.sources), "ranges": {k: list(v) for k, v in self.ranges.items()}}


H = "Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm)"
HAN = "Han et al., NeurIPS 2015 (32-bit SRAM read 5 pJ, from Horowitz)"
DAV = "Davies et al., 'Loihi', IEEE Micro 2018, Table 2 (pre-silicon minimum values)"
SANA = "SANA-FE (Boyle et al., IEEE TCAD 2025), arch/loihi.yaml (within 12 % of Loihi measurements)"
BLOUW = "derived from Blouw et al., NICE 2019, Table 1: (0.37 - 0.27) mJ static per inference x 296 inf/s"
KS = "Hoeppner et al., IEEE TCAS-I 2019, as tabulated in keras-spiking ModelEnergy"
DEG = "Degnan et al., IEEE TVLSI 2016, as tabulated in keras-spiking ModelEnergy ('cpu' device)"
NV_H = "NVIDIA H100 SXM datasheet: 989 TFLOP/s BF16 dense (67 FP32), 700 W, 3.35 TB/s"
NV_A = "NVIDIA A100 SXM4 80 GB datasheet: 312 TFLOP/s BF16 dense (19.5 FP32), 400 W, 2.04 TB/s"
ASSUME_BATCH = "assumption: weights read once per batch of 256 (large-batch serving)"
ASSUME_NEURON_GPU = "assumption: a neuron update (add + compare) or ReLU costs 2 FLOPs"


def _p(name: str, kind: str, description: str, spec: dict[str, tuple]) -> Profile:
    values, sources, ranges = {}, {}, {}
    for k, v in spec.items():
        values[k] = float(v[0])
        sources[k] = v[1]
        if len(v) > 2:
            ranges[k] = (float(v[2][0]), float(v[2][1]))
    return Profile(name, kind, description, values, sources, ranges)


_LOIHI_PLATFORM = {
    "static_power_w": (0.0296, BLOUW),
    "t_step_s": (299e-9, SANA + ": latency_global_barrier 299 ns per timestep"),
    "t_ac_s": (4.0e-9, SANA + ": synapse latency 4.0 ns per spike"),
    "t_neuron_s": (9.7e-9, SANA + ": active neuron update 9.7 ns"),
    "parallel_units": (128, DAV + ": 128 neuromorphic cores per chip (assumes perfect load balance)"),
}

PROFILES: dict[str, Profile] = {p.name: p for p in [
    _p("45nm-fp32", "event", "45 nm CMOS, FP32 arithmetic, SRAM weights (the SNN-paper convention)", {
        "e_mac": (4.6e-12, H + ": FP32 mult 3.7 pJ + add 0.9 pJ"),
        "e_ac": (0.9e-12, H + ": FP32 add"),
        "e_neuron": (0.9e-12, H + ": one FP32 add per membrane update (assumption: compare and reset free)"),
        "e_mem": (5e-12, HAN, (5e-12, 10e-12)),
    }),
    _p("45nm-int8", "event", "45 nm CMOS, INT8 weights and activations, INT32 membranes, SRAM", {
        "e_mac": (0.23e-12, H + ": INT8 mult 0.2 pJ + add 0.03 pJ"),
        "e_ac": (0.03e-12, H + ": INT8 add"),
        "e_neuron": (0.1e-12, H + ": INT32 add per membrane update (assumption: 32-bit membrane)"),
        "e_mem": (5e-12, HAN + " (a 32-bit word read; conservative for 8-bit values)", (5e-12, 10e-12)),
    }),
    _p("loihi", "event", "Intel Loihi (Davies 2018 minimum per-op energies; SANA-FE timing; static power from Blouw)", {
        "e_ac": (23.6e-12, DAV + ": synaptic op 23.6 pJ", (23.6e-12, 35.5e-12)),
        "e_mac": (23.6e-12, "keras-spiking convention: a non-spiking layer computes each connection as one "
                            "synaptic op per step (" + DAV + ")", (23.6e-12, 35.5e-12)),
        "e_neuron": (81e-12, DAV + ": neuron update 81 pJ active (52 pJ inactive)", (51.2e-12, 81e-12)),
        "e_spike": (3.0e-12, DAV + ": tile hop 3.0 pJ (one hop per spike, minimum)", (3.0e-12, 180.3e-12)),
        **_LOIHI_PLATFORM,
    }),
    _p("loihi-sanafe", "event", "Intel Loihi, per-event energies calibrated against measurement (SANA-FE)", {
        "e_ac": (35.5e-12, SANA + ": dense synapse 35.5 pJ", (24.0e-12, 35.5e-12)),
        "e_mac": (35.5e-12, "keras-spiking convention (one synaptic op per connection per step); " + SANA),
        "e_neuron": (72.8e-12, SANA + ": neuron access 51.2 pJ + update 21.6 pJ"),
        "e_spike": (180.3e-12, SANA + ": spike out 69.3 pJ + axon message out 111 pJ"),
        **_LOIHI_PLATFORM,
    }),
    _p("truenorth", "event", "IBM TrueNorth: 26 pJ per synaptic event, whole chip including static power", {
        "e_ac": (26e-12, "Merolla et al., Science 2014: 26 pJ per synaptic event (whole chip, incl. static)",
                 (21.7e-12, 26e-12)),
        "e_mac": (26e-12, "keras-spiking convention (one synaptic op per connection per step); Merolla 2014"),
        "e_neuron": (0.0, "Merolla 2014: included in the whole-chip per-event figure"),
    }),
    _p("spinnaker", "event", "SpiNNaker (130 nm ARM many-core)", {
        "e_ac": (13.3e-9, KS), "e_mac": (13.3e-9, "keras-spiking convention; " + KS), "e_neuron": (26e-9, KS)}),
    _p("spinnaker2", "event", "SpiNNaker 2 prototype (28 nm)", {
        "e_ac": (450e-12, KS), "e_mac": (450e-12, "keras-spiking convention; " + KS), "e_neuron": (2.19e-9, KS)}),
    _p("cpu", "event", "Intel i7-4960X, every synop and neuron update one MAC, no event-driven skipping "
                       "(keras-spiking 'cpu' device)", {
        "e_mac": (8.6e-9, DEG), "e_ac": (8.6e-9, DEG), "e_neuron": (8.6e-9, DEG),
        "event_driven": (0, "keras-spiking: non-spiking devices compute every synapse each timestep")}),
    _p("gpu-h100", "gpu", "NVIDIA H100 SXM, BF16, roofline at board power (lower bound; no launch/idle overhead)", {
        "peak_flops": (989e12, NV_H + " (0.71 pJ/FLOP at board power)", (67e12, 989e12)),
        "board_power_w": (700.0, NV_H),
        "mem_bw": (3.35e12, NV_H),
        "bytes_per_value": (2, "BF16 values", (2, 4)),
        "batch_size": (256, ASSUME_BATCH),
        "flops_per_neuron_update": (2, ASSUME_NEURON_GPU),
    }),
    _p("gpu-a100", "gpu", "NVIDIA A100 SXM4 80 GB, BF16, roofline at board power (lower bound)", {
        "peak_flops": (312e12, NV_A + " (1.28 pJ/FLOP at board power)", (19.5e12, 312e12)),
        "board_power_w": (400.0, NV_A),
        "mem_bw": (2.04e12, NV_A),
        "bytes_per_value": (2, "BF16 values", (2, 4)),
        "batch_size": (256, ASSUME_BATCH),
        "flops_per_neuron_update": (2, ASSUME_NEURON_GPU),
    }),
]}


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
    if key in POSITIVE and v == 0:
        raise SnnError(f"profile {pname!r}: {key} must be > 0")
    return v


def make_profile(name: str, spec: dict[str, Any]) -> Profile:
    """Build and validate a profile from a dict (see the module docstring for the format)."""
    if not isinstance(spec, dict):
        raise SnnError(f"profile {name!r} must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind", "event")
    if kind not in KINDS:
        raise SnnError(f"profile {name!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    allowed = set(REQUIRED[kind]) | set(OPTIONAL[kind]) | {"kind", "description"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SnnError(f"profile {name!r}: unknown key(s) {', '.join(unknown)} (no pricing tier of kind {kind!r} "
                       f"uses them); valid: {', '.join(sorted(allowed))}")
    missing = [k for k in REQUIRED[kind] if k not in spec]
    if missing:
        raise SnnError(f"profile {name!r}: missing required value(s) {', '.join(missing)} (kind {kind!r} needs "
                       f"{', '.join(REQUIRED[kind])})")
    values, sources, ranges = {}, {}, {}
    for k, v in spec.items():
        if k in ("kind", "description"):
            continue
        if isinstance(v, dict):
            extra = set(v) - {"value", "source", "range"}
            if extra or "value" not in v:
                raise SnnError(f"profile {name!r}: {k} must be a number or {{value, source, range}}, got {v!r}")
            values[k] = _check_number(name, k, v["value"])
            sources[k] = str(v.get("source") or "user-supplied (no source given)")
            if "range" in v:
                r = v["range"]
                if not isinstance(r, (list, tuple)) or len(r) != 2:
                    raise SnnError(f"profile {name!r}: {k}.range must be [low, high], got {r!r}")
                lo, hi = (_check_number(name, f"{k}.range", x) for x in r)
                if lo > hi:
                    raise SnnError(f"profile {name!r}: {k}.range low {lo} > high {hi}")
                ranges[k] = (lo, hi)
        else:
            values[k] = _check_number(name, k, v)
            sources[k] = "user-supplied (no source given)"
    return Profile(name, kind, str(spec.get("description", "user profile")), values, sources, ranges)


def load_profiles(path: str | Path) -> dict[str, Profile]:
    """Read custom profiles from a YAML or JSON file with a top-level ``profiles`` mapping;
    every error (:class:`SnnError`) names the file, and the profile and key at fault."""
    path = Path(path)
    if not path.exists():
        raise SnnError(f"no such profile file: {path}")
    text = path.read_text()
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


def resolve(hardware: Any, extra: dict[str, Profile] | None = None) -> list[Profile]:
    """Profiles named in ``hardware`` (names, :class:`Profile` objects, or one name);
    an unknown name lists the known ones."""
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
