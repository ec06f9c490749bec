"""The ``snn`` command.

::

    snn run CONFIG [--set key.path=value ...]        one experiment -> results/<name>/<run>/
    snn sweep CONFIG [--workers N | --ray [--address ADDR]]
    snn report RUN_DIR                               (re)build a run's report
    snn compare RUN_DIR RUN_DIR ... [--out DIR]      table + plots of several runs
    snn convert model.pt --arch lenet5 --calib mnist --out net.h5
    snn convert model.onnx --calib mnist --out net.h5 [--reset zero --v-init 0]
    snn export net.h5 --nir net.nir | --lava net.net   NIR graph file / lava-dl netx (Loihi 2)
    snn energy net.h5 --data mnist --timesteps 32    simulate a saved network and price it
    snn data list | verify NAME | download NAME
    snn hardware [NAME] [--profiles-file FILE]       the hardware profiles, each constant with its source
    snn config show [FILE] [--set ...]               a config resolved with every default, described
    snn config docs [--out docs/config.md]           the config reference (Markdown)
    snn doctor                                       check the install, build the kernels, say what to fix
    snn --version

Every error a user can cause (:class:`snn.errors.SnnError`, bad arguments) prints one
line to stderr and exits with code 2; no traceback. Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from snn.errors import SnnError

USER_ERROR = 2


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default (unless it is None, False or empty, or the
    help text gives it already) and its valid values."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.choices and (len(action.choices) > 4 or action.metavar is not None) and "valid:" not in text \
                and not isinstance(action, argparse._SubParsersAction):
            text += f" (valid: {', '.join(map(str, action.choices))})"
        d = action.default
        if "default" not in text and d not in (None, False, [], argparse.SUPPRESS) and action.option_strings:
            text += f" (default: {' '.join(map(str, d)) if isinstance(d, list) else d})"
        return text.replace("%", "%%")

    def _metavar_formatter(self, action: argparse.Action, default_metavar: str):  # type: ignore[override]
        if action.choices and len(action.choices) > 4 and action.metavar is None:  # listed in the help instead
            action.metavar = default_metavar
        return super()._metavar_formatter(action, default_metavar)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit code 2) and shows defaults and
    valid values in its help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- commands
def cmd_run(a: argparse.Namespace) -> int:
    from snn.runner import run_experiment

    run = run_experiment(a.config, a.set, results_dir=a.results, progress=not a.quiet,
                         log=(lambda m: None) if a.quiet else _err)
    s = run.summary
    print(f"ANN accuracy {100 * s['ann_accuracy']:.2f}%, SNN accuracy {100 * s['snn_accuracy']:.2f}% "
          f"at T={s['timesteps']}")
    print(f"run:    {run.path}")
    if (run.path / "report.html").is_file():
        print(f"report: {run.path / 'report.html'}")
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    from snn.sweep import run_sweep

    res = run_sweep(a.config, a.set, results_dir=a.results, workers=a.workers, use_ray=a.ray, address=a.address)
    print(f"sweep {res.name}: {len(res.runs)}/{res.total} runs complete "
          f"({len(res.ran)} run now, {len(res.skipped)} already done, {len(res.failed)} failed)")
    for point, err in res.failed:
        print(f"  failed: {point}: {err}")
    if res.compare_dir:
        print(f"comparison: {res.compare_dir / 'compare.html'}")
    return 1 if res.failed else 0


def cmd_report(a: argparse.Namespace) -> int:
    from snn.report import build_report

    print(f"report: {build_report(a.run_dir)}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from snn.report import compare_runs, compare_table
    from snn.results import read_run

    out = Path(a.out) if a.out else Path(a.results) / "compare" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    runs = [read_run(p) for p in a.runs]
    head, rows = compare_table(runs)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    compare_runs(a.runs, out, title=a.title)
    reports = [r.path / "energy.json" for r in runs if (r.path / "energy.json").is_file()]
    if reports:
        from snn.energy import compare

        print("\nenergy per inference:\n" + compare(reports).table())
    print(f"comparison: {out / 'compare.html'}")
    return 0


def _kv(items: Sequence[str], flag: str) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SnnError(f"{flag} {item!r}: expected name=value")
        out[k] = yaml.safe_load(v)
    return out


def _model_to_convert(a: argparse.Namespace) -> tuple[Any, str]:
    """(model, label) of `snn convert`: a run folder's saved ANN (its dataset calibrates it
    unless --calib says otherwise), an ONNX file, or a checkpoint of a zoo architecture."""
    from snn import data, train, zoo

    if Path(a.model).is_dir():
        from snn.runner import load_run_model

        if a.arch or a.arch_arg:
            raise SnnError("--arch/--arch-arg describe a checkpoint; a run folder holds its model's spec")
        model, spec = load_run_model(a.model)
        a.calib = a.calib or spec.get("dataset")
        return model, f"{spec['model']} of run {Path(a.model).name}"
    if a.calib is None:
        raise SnnError("--calib DATASET is required (it is optional only for a run folder)")
    if str(a.model).lower().endswith(".onnx"):
        if a.arch or a.arch_arg:
            raise SnnError("--arch/--arch-arg describe a checkpoint; an ONNX file holds its own architecture")
        return str(a.model), Path(a.model).name
    if not a.arch:
        raise SnnError("a checkpoint needs --arch (its zoo architecture); an .onnx file does not")
    ds = data.info(a.calib)
    model = zoo.create_model(a.arch, **{**zoo.dataset_kwargs(a.arch, ds.shape, ds.num_classes),
                                        **_kv(a.arch_arg, "--arch-arg")})
    train.load_checkpoint(model, a.model)
    return model.eval(), a.arch


def cmd_convert(a: argparse.Namespace) -> int:
    import snn
    from snn import data

    model, label = _model_to_convert(a)
    x, _ = data.load_dataset(a.calib, "train", root=a.data_root, limit=a.calib_samples)
    net = snn.convert(model, x, method=a.method, percentile=a.percentile, max_calibration=a.calib_samples,
                      reset=a.reset, v_init=a.v_init)
    net.save(a.out)
    n_if = sum(1 for v in net.graph.nodes.values() if v.kind == "if")
    print(f"converted {label} ({n_if} IF layers, calibrated on {len(x)} {a.calib} samples) -> {a.out}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    import snn

    if not a.nir and not a.lava:
        raise SnnError("say what to write: --nir PATH and/or --lava PATH")
    net = snn.load(a.network)
    if a.nir:
        snn.to_nir(net, a.nir, allow_lossy=a.allow_lossy)
        print(f"wrote {a.nir} (NIR)")
    if a.lava:
        if "quantization" not in net.meta:
            net = snn.quantize(net, weight_bits=a.weight_bits)
            print(f"quantised to {a.weight_bits}-bit weights (per-layer exponent) for Loihi")
        snn.to_lava(net, a.lava)
        print(f"wrote {a.lava} (lava-dl netx)")
    return 0


def cmd_energy(a: argparse.Namespace) -> int:
    import numpy as np

    import snn
    from snn import data
    from snn.config import check_device

    try:  # every argument checked before the network is loaded and simulated (--hardware: by argparse)
        check_device(a.device)
    except ValueError as e:
        raise SnnError(f"--device: {e}") from None
    data.info(a.data)
    net = snn.load(a.network)
    x, y = data.load_dataset(a.data, "test", root=a.data_root, limit=a.samples)
    shape = net.graph.shapes[net.graph.input]
    if x.shape[1:] != shape:
        if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise SnnError(f"{a.data} samples of shape {x.shape[1:]} do not fit the network input {shape}")
        x = x.reshape((len(x),) + tuple(shape))
    res = snn.simulate(net, x, timesteps=a.timesteps, backend=a.backend, encoding=a.encoding,
                       batch_size=a.batch_size, device=a.device, record="steps", progress=True)
    print(f"SNN accuracy at T={a.timesteps} on {len(x)} {a.data} test samples: {100 * res.accuracy(y)[-1]:.2f}%")
    kwargs = {"hardware": a.hardware} if a.hardware else {}
    report = snn.energy_report(net, res, x=x, labels=y, batch_size=a.energy_batch_size, **kwargs)
    print(report.table())
    for path, writer in ((a.json, report.to_json), (a.md, report.to_markdown), (a.html, report.to_html)):
        if path:
            writer(path)
            print(f"wrote {path}")
    return 0


def cmd_data(a: argparse.Namespace) -> int:
    from snn import data

    root = data.data_root(a.data_root)
    if a.action == "list":
        print(f"data root: {root}  (set SNN_DATA or --data-root to change it)")
        for name, ds in data.DATASETS.items():
            try:
                where = data.dataset_label(name, a.data_root)
                status = f"present: {where}"
            except SnnError:
                status = "missing"
            sizes = "/".join(str(ds.sizes[s]) for s in ("train", "test"))
            print(f"  {name:14s} {'x'.join(map(str, ds.shape)):9s} {ds.num_classes:3d} classes  "
                  f"train/test {sizes:12s} {status}")
        return 0
    if not a.name:
        raise SnnError(f"`snn data {a.action}` needs a dataset name; valid: {', '.join(data.DATASETS)}")
    if a.action == "verify":
        checks = data.verify(a.name, a.data_root)
        for c in checks:
            print(f"  {c.status:7s} {c.file}  {c.path or ''}")
        bad = [c for c in checks if not c.ok]
        if bad:
            raise SnnError(f"{a.name}: {len(bad)} of {len(checks)} files missing or corrupt; "
                           f"{bad[0].detail or bad[0].status}")
        print(f"{a.name}: all {len(checks)} files verified")
        return 0
    paths = data.download(a.name, a.data_root, base_url=a.base_url)
    print(f"{a.name}: {len(paths)} files present and verified under {root}")
    return 0


def _fmt(v: float, unit: str) -> str:
    return f"{v:.4g} {unit}".strip()


def cmd_hardware(a: argparse.Namespace) -> int:
    from snn.energy import PROFILES, load_profiles
    from snn.energy.profiles import constants

    profiles = {**PROFILES, **(load_profiles(a.profiles_file) if a.profiles_file else {})}
    if a.name is None:
        print(f"{len(profiles)} hardware profiles (`snn hardware NAME` shows every constant with its source; "
              "add your own with energy.profiles_file):")
        for name, pr in profiles.items():
            tiers = ", ".join(t for t in ("compute", "platform", "embodied") if t == "compute" or pr.has(t))
            print(f"\n{name}  [{pr.kind}; tiers: {tiers}]\n  {pr.description}")
            cited = [v for v in pr.sources.values() if not v.startswith(("calibrated", "assumption"))]
            for src in dict.fromkeys(v.split(": ")[0].split(" (")[0] for v in cited):
                print(f"    source: {src}")
            notes = [f"{len(pr.calibrated)} constant(s) calibrated on measurements" if pr.calibrated else "",
                     f"{len(pr.sources) - len(cited) - len(pr.calibrated)} assumption(s)"
                     if len(pr.sources) - len(cited) > len(pr.calibrated) else ""]
            if any(notes):
                print(f"    and {', '.join(n for n in notes if n)}")
        return 0
    if a.name not in profiles:
        raise SnnError(f"unknown hardware profile {a.name!r}; valid: {', '.join(profiles)}")
    pr = profiles[a.name]
    tiers = [t for t in ("compute", "platform", "embodied") if t == "compute" or pr.has(t)]
    print(f"{pr.name}  [{pr.kind}]: {pr.description}\ntiers: {', '.join(tiers)}"
          + ("" if pr.has("platform") else " (no platform tier: dynamic energy only, no total)"))
    tier = None
    for row in constants(pr):
        if row["tier"] != tier:
            tier = row["tier"]
            print(f"\n{tier}:")
        rng = f"  range {_fmt(row['range'][0], row['unit'])} to {_fmt(row['range'][1], row['unit'])}" \
            if row["range"] else ""
        print(f"  {row['key']:24s} {_fmt(row['value'], row['unit']):>16s}{rng}")
        print(f"  {'':24s} source: {row['source']}")
        if row["calibrated"]:
            print(f"  {'':24s} calibrated on: {row['calibrated']}")
    return 0


def cmd_config(a: argparse.Namespace) -> int:
    from snn import config

    if a.action == "docs":
        text = config.docs_markdown()
        if a.out:
            from snn.util import atomic_write_text

            atomic_write_text(a.out, text)
            print(f"wrote {a.out}")
        else:
            print(text, end="")
        return 0
    if a.file is None and a.set:
        raise SnnError("--set needs a config FILE to override")
    cfg = config.load_config(a.file, a.set) if a.file else None
    head = (f"# {a.file} resolved (config hash {config.config_hash(cfg)}): every default filled in"
            if cfg is not None else "# every key with its default (name is required)")
    print(head + "; `snn config docs` for the reference\n" + config.describe(cfg), end="")
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    from snn.doctor import run_checks

    return run_checks(data_root=a.data_root, brian2=not a.no_brian2)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("snn")
    except PackageNotFoundError:
        v = "unknown (not installed)"
    return f"snn {v} (python {sys.version.split()[0]})"


def _names(module: str, attr: str) -> list[str]:
    """The names of a registry (for --help), imported when the parser is built."""
    import importlib

    return list(getattr(importlib.import_module(module), attr))


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="snn", description="Convert ANNs to spiking networks, simulate, price and report them.",
                epilog="`snn COMMAND --help` for each command's options. Start with `snn doctor`; "
                       "`snn hardware` lists the hardware profiles, `snn config show` the config keys.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    datasets, backends = _names("snn.data", "DATASETS"), _names("snn.backends", "BACKENDS")
    encodings, profiles = _names("snn.encode", "ENCODINGS"), _names("snn.energy", "PROFILES")
    archs = _names("snn.zoo", "MODELS")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="experiment YAML (see experiments/)")
        sp.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value (YAML syntax), e.g. --set sim.timesteps=64; repeatable")
        sp.add_argument("--results", default=None, metavar="DIR", help="results root (default: the config's output.dir)")

    sp = sub.add_parser("run", help="run one experiment")
    with_config(sp)
    sp.add_argument("--quiet", action="store_true", help="no progress output")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("sweep", help="run every combination of the config's sweep lists (resumable)")
    with_config(sp)
    sp.add_argument("--workers", type=int, default=1, help="local worker processes (with --ray: CPUs of a local cluster)")
    sp.add_argument("--ray", action="store_true", help="run the runs as Ray tasks")
    sp.add_argument("--address", default=None, help="Ray cluster address (default: start a local cluster)")
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("report", help="(re)build the report of a run")
    sp.add_argument("run_dir", help="a run folder (results/<name>/<run>/)")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("compare", help="tabulate and plot several runs")
    sp.add_argument("runs", nargs="+", metavar="RUN_DIR")
    sp.add_argument("--out", default=None, help="output folder (default: results/compare/<timestamp>)")
    sp.add_argument("--results", default="results", help=argparse.SUPPRESS)
    sp.add_argument("--title", default="Comparison of runs", help="page title")
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser("convert", help="convert a trained checkpoint of a zoo architecture, or an ONNX model, "
                                        "to an SNN file")
    sp.add_argument("model", help="a run folder (its model.safetensors, rebuilt from the spec it holds), a state "
                                  "dict checkpoint (.pt/.pth loaded with weights_only=True, or .safetensors), "
                                  "or an ONNX model (.onnx)")
    sp.add_argument("--arch", default=None, choices=archs,
                    help="zoo architecture of a checkpoint (not for a run folder or .onnx)")
    sp.add_argument("--arch-arg", action="append", default=[], metavar="NAME=VALUE", help="zoo argument; repeatable")
    sp.add_argument("--calib", default=None, choices=datasets,
                    help="dataset whose training split calibrates the conversion (default for a run folder: "
                         "the run's dataset; required otherwise)")
    sp.add_argument("--calib-samples", type=int, default=2048, help="calibration samples")
    sp.add_argument("--method", default="percentile", choices=["max", "percentile"], help="normalisation method")
    sp.add_argument("--percentile", type=float, default=99.99,
                    help="percentile of the activations that sets each scale, in percent")
    sp.add_argument("--data-root", default=None, help="default: $SNN_DATA, else ~/.cache/snn/data")
    sp.add_argument("--reset", default="subtract", choices=["subtract", "zero"],
                    help="IF reset (NIR and Lava hold only 'zero' exactly)")
    sp.add_argument("--v-init", type=float, default=0.5, help="initial membrane / threshold (NIR and Lava: 0)")
    sp.add_argument("--out", required=True, help="output network file (.h5)")
    sp.set_defaults(func=cmd_convert)

    sp = sub.add_parser("export", help="export a saved network as NIR or lava-dl netx")
    sp.add_argument("network", help="network file written by `snn convert` or a run (network.h5)")
    sp.add_argument("--nir", default=None, metavar="PATH", help="write a NIR graph file")
    sp.add_argument("--allow-lossy", action="store_true", help="NIR: write inexact nodes, losses in the metadata")
    sp.add_argument("--lava", default=None, metavar="PATH", help="write a lava-dl netx HDF5 file (Loihi 2)")
    sp.add_argument("--weight-bits", type=int, default=8, help="Lava: weight bits when the network is not quantised")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("energy", help="simulate a saved network on a dataset and print its energy report")
    sp.add_argument("network", help="network file written by `snn convert` or a run (network.h5)")
    sp.add_argument("--data", required=True, choices=datasets, help="dataset (test split)")
    sp.add_argument("--timesteps", type=int, default=32, help="simulation steps T")
    sp.add_argument("--samples", type=int, default=1000, help="test samples to simulate")
    sp.add_argument("--hardware", nargs="+", default=None, choices=profiles, metavar="NAME",
                    help="hardware profiles (`snn hardware` describes them; default: those of energy.hardware, "
                         f"{' '.join(_default_hardware())})")
    sp.add_argument("--backend", default="snntorch", choices=backends, help="simulator")
    sp.add_argument("--encoding", default="constant", choices=encodings, help="input encoding")
    sp.add_argument("--batch-size", type=int, default=256, help="simulation batch size")
    sp.add_argument("--energy-batch-size", type=int, default=1,
                    help="inferences per call when pricing GPUs and CPUs")
    sp.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    sp.add_argument("--data-root", default=None, help="default: $SNN_DATA, else ~/.cache/snn/data")
    sp.add_argument("--json", default=None, help="also write the report as JSON")
    sp.add_argument("--md", default=None, help="also write the report as Markdown")
    sp.add_argument("--html", default=None, help="also write the report as HTML")
    sp.set_defaults(func=cmd_energy)

    sp = sub.add_parser("data", help="list, verify (md5) or download datasets")
    sp.add_argument("action", choices=["list", "verify", "download"], help="what to do")
    sp.add_argument("name", nargs="?", metavar="NAME", help=f"dataset (valid: {', '.join(datasets)})")
    sp.add_argument("--data-root", default=None, help="default: $SNN_DATA, else ~/.cache/snn/data")
    sp.add_argument("--base-url", default=None, help="download from this mirror instead")
    sp.set_defaults(func=cmd_data)

    sp = sub.add_parser("hardware", help="list the hardware profiles, or show one's constants with their sources")
    sp.add_argument("name", nargs="?", metavar="NAME", help="a profile (default: list them all)")
    sp.add_argument("--profiles-file", default=None, metavar="FILE", help="also your own profiles (YAML/JSON)")
    sp.set_defaults(func=cmd_hardware)

    sp = sub.add_parser("config", help="show a config resolved with every default and a description per key, "
                                       "or write the config reference")
    sp.add_argument("action", choices=["show", "docs"],
                    help="show: FILE resolved (no FILE: the defaults); docs: the Markdown reference")
    sp.add_argument("file", nargs="?", metavar="FILE", help="experiment YAML (show)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a config value, as for `snn run`; repeatable")
    sp.add_argument("--out", default=None, metavar="PATH", help="docs: write to PATH (default: print)")
    sp.set_defaults(func=cmd_config)

    sp = sub.add_parser("doctor", help="check the install: torch build, fused kernels (built now), brian2 code "
                                       "generation, data, GPU, optional extras")
    sp.add_argument("--data-root", default=None, help="default: $SNN_DATA, else ~/.cache/snn/data")
    sp.add_argument("--no-brian2", action="store_true", help="skip the brian2 cython check (it compiles)")
    sp.set_defaults(func=cmd_doctor)
    return p


def _default_hardware() -> list[str]:
    from snn.config import EnergyConfig

    return list(EnergyConfig().hardware)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``snn`` command; returns the exit code (2 for user errors)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (2), --help (0)
        return int(e.code or 0)
    try:
        return args.func(args)
    except SnnError as e:
        _err(f"snn {args.command}: error: {' '.join(str(e).split())}")
        return USER_ERROR
    except KeyboardInterrupt:
        _err(f"snn {args.command}: interrupted")
        return 130
    except BrokenPipeError:  # the output was piped into a reader that stopped (`snn hardware | head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
