"""Two virtual environments on one machine: does the second run of each compile nothing?

The snntorch backend's fused kernels are compiled at first use into a build directory
keyed by a hash of the whole compile command (:mod:`snn.backends.snntorch.kernels`). This
script makes a second environment with ``python -m venv --system-site-packages`` (the same
torch and snn, another ``sys.prefix``), then loads the kernels in a fresh process each
time, alternating: this environment twice, the new one twice, then each once more. For
each load it prints the environment, its cache key, the seconds to import the backend
and to load the kernels, and whether the load compiled (a library in its build directory
is new or rewritten). Expected: one build per environment, in its own directory, and no
environment rebuilding the other's; the ratio is the first build's time over the cached
loads'. (Before the key held the compile command, the cache was one directory per torch
version, and environments whose commands differed rebuilt it in turn, 35 to 90 s each.)

The cache is a new temporary directory unless ``--cache`` is given, so the first build is
a real one. JSON under results/reference/ (or ``--out``).

    python experiments/bench/kernel_cache.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from snn.backends.snntorch import kernels
t1 = time.perf_counter()
d = kernels.build_dir()
libraries = lambda: sorted((p.name, p.stat().st_mtime_ns) for p in d.glob("*.so")) if d.is_dir() else []
before = libraries()
m = kernels.load()
t2 = time.perf_counter()
print(json.dumps({"prefix": sys.prefix, "key": d.name, "import_s": t1 - t0, "load_s": t2 - t1,
                  "loaded": m is not None, "compiled": libraries() != before, "failed": kernels._failed}))
"""
ORDER = ("this", "this", "venv", "venv", "this", "venv")


def probe(python: str, cache: Path) -> dict:
    """One load of the kernels in a fresh process of ``python``, with ``SNN_CACHE=cache``."""
    env = dict(os.environ, SNN_CACHE=str(cache))
    r = subprocess.run([python, "-c", PROBE], cwd=common.ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"the probe failed in {python}:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, help="the build cache ($SNN_CACHE); default: a new temporary directory")
    ap.add_argument("--out", type=Path, help="where the JSON goes; default results/reference/kernel_cache.json")
    args = ap.parse_args()
    common.setup()
    with tempfile.TemporaryDirectory(prefix="snn-kernel-cache-") as tmp:
        cache = args.cache or Path(tmp) / "cache"
        venv = Path(tmp) / "venv"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                       check=True)
        print(f"# made {venv} in {time.perf_counter() - t0:.1f} s; cache {cache}")
        pythons = {"this": sys.executable, "venv": str(venv / "bin" / "python")}
        runs = []
        print(f"{'env':5s} {'run':>3s} {'key':16s} {'import s':>8s} {'load s':>7s} {'compiled':>8s}")
        for env in ORDER:
            r = probe(pythons[env], cache)
            if not r["loaded"]:
                raise SystemExit(f"the kernels did not build in {env}: {r['failed']}")
            r.update(env=env, run=sum(x["env"] == env for x in runs) + 1)
            runs.append(r)
            print(f"{env:5s} {r['run']:3d} {r['key']:16s} {r['import_s']:8.2f} {r['load_s']:7.3f} "
                  f"{'yes' if r['compiled'] else 'no':>8s}")
    builds = [r["load_s"] for r in runs if r["compiled"]]
    cached = [r["load_s"] for r in runs if not r["compiled"]]
    print(f"\n{len(builds)} builds for {len(set(ORDER))} environments in {len(runs)} loads", end="")
    print(f"; first build {builds[0]:.1f} s, a cached load {max(cached):.3f} s at most (ratio "
          f"{builds[0] / max(cached):.0f}x)" if builds and cached else "")
    payload = {"benchmark": "fused kernels' build cache, two virtual environments on one machine",
               "order": list(ORDER), "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}")
    else:
        common.write_json("kernel_cache.json", payload)


if __name__ == "__main__":
    main()
