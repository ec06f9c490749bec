"""Install size of snn without extras and with each extra, from the installed packages.

For each extra, the dependency closure of ``snn[extra]`` is resolved through the installed
distributions' own metadata (``Requires-Dist`` with its environment markers and extras),
and the size on disk of every file each distribution installed (its ``RECORD``, files
stat-ed) is summed. The versions are those installed here (torch: the CPU build that
``.ci/setup`` installs); pip's own cache and the bytecode Python writes later are not
counted. A requirement that no installed distribution satisfies is listed as missing (its
size is then not counted). Prints a table and writes
``results/reference/install_size.json``::

    python experiments/bench/install_size.py
"""
from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "reference" / "install_size.json"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def closure(reqs: list[Requirement]) -> tuple[dict[str, metadata.Distribution], list[str]]:
    """Installed distributions needed by ``reqs`` (transitively), and the requirements missing."""
    seen: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    todo = [(r, frozenset()) for r in reqs]
    done: set[tuple[str, frozenset]] = set()
    while todo:
        req, parent_extras = todo.pop()
        env = [{"extra": e} for e in parent_extras] or [{"extra": ""}]
        if req.marker is not None and not any(req.marker.evaluate(e) for e in env):
            continue
        key = (_norm(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        d = _dist(req.name)
        if d is None:
            missing.append(str(req))
            continue
        seen[_norm(req.name)] = d
        for r in d.requires or []:
            todo.append((Requirement(r), frozenset(req.extras)))
    return seen, sorted(set(missing))


def size(d: metadata.Distribution) -> int:
    """Bytes on disk of the files ``d`` installed (its RECORD), stat-ed now."""
    total = 0
    for f in d.files or []:
        p = Path(d.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total


def project_requirements() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    import tomllib

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [Requirement(r) for r in proj["dependencies"]]
    extras = {k: [Requirement(r) for r in v] for k, v in proj["optional-dependencies"].items()}
    return base, extras


def main() -> None:
    base, extras = project_requirements()
    base_dists, base_missing = closure(base)
    sizes = {n: size(d) for n, d in base_dists.items()}
    base_total = sum(sizes.values())
    rows = {"(none)": {"packages": len(base_dists), "bytes": base_total, "added_bytes": base_total,
                       "missing": base_missing,
                       "largest": sorted(((n, s) for n, s in sizes.items()), key=lambda t: -t[1])[:5]}}
    for extra, reqs in extras.items():
        dists, missing = closure(base + reqs)
        added = {n: size(d) for n, d in dists.items() if n not in base_dists}
        rows[extra] = {"packages": len(dists), "bytes": base_total + sum(added.values()),
                       "added_bytes": sum(added.values()), "missing": missing,
                       "largest": sorted(added.items(), key=lambda t: -t[1])[:5]}
    print(f"python {sys.version.split()[0]}, torch {_dist('torch').version if _dist('torch') else '?'}")
    print(f"{'extra':10s} {'packages':>8s} {'total MB':>9s} {'added MB':>9s}  largest added")
    for extra, r in rows.items():
        big = ", ".join(f"{n} {s / 1e6:.0f}" for n, s in r["largest"][:3])
        print(f"{extra:10s} {r['packages']:8d} {r['bytes'] / 1e6:9.0f} {r['added_bytes'] / 1e6:9.0f}  {big}"
              + (f"  (missing here: {', '.join(r['missing'])})" if r["missing"] else ""))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"python": sys.version.split()[0], "method": __doc__.split("\n\n")[1], "rows": rows},
                              indent=1))
    tmp.replace(OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
