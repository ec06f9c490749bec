"""The reference reports (issue 16), rendered from real runs and checked in headless Chromium.

Runs the README's quick start (``experiments/quickstart.yaml``), the MNIST LeNet-5
(``experiments/mnist_lenet.yaml``, all 10,000 test images) and the timesteps x method sweep
(``experiments/sweep_timesteps.yaml``, 8 runs and their comparison page) into
``results/report_check/`` (git-ignored; a re-run reuses the sweep's finished points), then
loads each page (report.html, energy.html, compare.html) in headless Chromium at
1280 px (:mod:`snn.browser`) and prints, per page: images loaded, tables, the widest table
against the page's content width, numbers wrapping in cells, and any problem.

Writes ``results/reference/report_check.json`` and small screenshots of the top of each
page, ``results/reference/report_{quickstart,mnist_lenet5,compare}.png``.

    python experiments/bench/report_check.py [--skip-mnist]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

EXPERIMENTS = common.ROOT / "experiments"
OUT = common.ROOT / "results" / "report_check"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-mnist", action="store_true", help="leave out the MNIST LeNet-5 run")
    args = ap.parse_args()
    common.setup()
    from snn import browser
    from snn.runner import run_experiment
    from snn.sweep import run_sweep

    exe = browser.find_browser()
    if exe is None:
        sys.exit("no headless Chromium found (apt-get install chromium, or set SNN_BROWSER)")
    quiet = {"results_dir": OUT, "progress": False, "log": lambda m: None}
    pages: dict[str, Path] = {}
    t0 = time.perf_counter()
    qs = run_experiment(EXPERIMENTS / "quickstart.yaml", **quiet)
    pages["quickstart"] = qs.path / "report.html"
    pages["quickstart energy"] = qs.path / "energy.html"
    if not args.skip_mnist:
        lenet = run_experiment(EXPERIMENTS / "mnist_lenet.yaml", **quiet)
        pages["mnist_lenet5"] = lenet.path / "report.html"
        pages["mnist_lenet5 energy"] = lenet.path / "energy.html"
    sweep = run_sweep(EXPERIMENTS / "sweep_timesteps.yaml", results_dir=OUT, workers=1)
    if sweep.failed or sweep.compare_dir is None:
        sys.exit(f"the sweep failed: {sweep.failed}")
    pages["compare"] = sweep.compare_dir / "compare.html"
    runs_s = time.perf_counter() - t0

    rows = []
    print(f"\n{'page':<22} {'images':>7} {'tables':>6} {'widest':>7} {'content':>7} {'wrapped':>7}  problems")
    for name, page in pages.items():
        m = browser.check_page(page, exe)
        found = browser.problems(m)
        widest = max((t["width"] for t in m["tables"]), default=0)
        loaded = sum(i["complete"] and i["natural_width"] > 0 for i in m["images"])
        print(f"{name:<22} {loaded:>3}/{len(m['images']):<3} {len(m['tables']):>6} {widest:>5}px "
              f"{m['content_width']:>5.0f}px {len(m['wrapped_numbers']):>7}  {'; '.join(found) or 'none'}")
        rows.append({"page": name, "file": str(page.relative_to(common.ROOT)), "title": m["title"],
                     "images": len(m["images"]), "images_loaded": loaded, "tables": len(m["tables"]),
                     "widest_table_px": widest, "content_width_px": m["content_width"],
                     "page_width_px": m["page_width"], "window_px": m["viewport"],
                     "wrapped_numbers": m["wrapped_numbers"], "problems": found})
        if not name.endswith("energy"):
            shot = common.REFERENCE / f"report_{name}.png"
            browser.screenshot(page, shot, height=1800, scale=0.6, browser=exe)
            print(f"{'':<22} screenshot {shot.relative_to(common.ROOT)} ({shot.stat().st_size // 1024} KB)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\n{version}; runs took {runs_s:.0f} s")
    common.write_json("report_check.json", {"browser": version, "window_px": browser.WIDTH, "runs_s": round(runs_s, 1),
                                            "pages": rows})
    if any(r["problems"] for r in rows):
        sys.exit("some pages have problems (above)")


if __name__ == "__main__":
    main()
