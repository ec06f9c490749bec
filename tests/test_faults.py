"""Fault injection on the real `snn` command: SIGKILL at random points of `snn run` and
`snn sweep`, a disk that fills up, a read-only results folder, a Ray worker killed
mid-sweep. What must hold (README "Guarantees"):

- no folder that looks like a run (not hidden, not the comparison or Ray-log folder) is
  incomplete: each has its ``COMPLETE`` marker and every file reads back;
- a resumed sweep runs exactly the points that have no complete run, and leaves the
  complete ones as they were;
- a full disk or a read-only folder: exit code 2, one line naming the cause, the earlier
  runs byte for byte intact, no partial folder left;
- a Ray worker that dies: its point is run again and the sweep finishes.

The 20-kill loop is ``test_kill_loop`` (slow); it prints its counts::

    python -m pytest tests/test_faults.py -k kill_loop -s -m slow
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import snn
from snn.results import MARKER, PARTIAL, is_complete, list_runs, read_run

REPO = Path(snn.__file__).resolve().parent.parent
CACHE = Path(tempfile.mkdtemp(prefix="snn-test-models-"))  # the model, trained once for every test here
NOT_RUNS = {"sweep", "ray-logs"}  # a sweep's comparison folder and its Ray logs


def _env() -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg",
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _config(tmp: Path, name: str, sweep: dict | None = None, report: bool = False) -> Path:
    cfg = {"name": name, "threads": 1, "data": {"name": "digits", "test_limit": 100},
           "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
           "train": {"epochs": 4, "lr": 0.01, "cache_dir": str(CACHE)},
           "sim": {"timesteps": 8}, "energy": {"hardware": ["loihi"]},
           "output": {"report": report, "save_network": True}}
    if sweep:
        cfg["sweep"] = sweep
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def _train_first(cfg: Path) -> None:
    """Train (and cache) the model here, so that the commands only load it."""
    from snn.config import expand_sweep, load_config
    from snn.runner import build_model

    build_model(expand_sweep(load_config(cfg))[0][1], progress=False, log=lambda m: None)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "snn.cli", *args]


def assert_sound(root: Path, name: str) -> dict[str, int]:
    """Every folder under ``root/name`` that looks like a run is a complete one that reads
    back (config, summary, results.h5, network.h5); returns {"complete", "partial"}."""
    exp, n = root / name, {"complete": 0, "partial": 0}
    for p in sorted(exp.iterdir()) if exp.is_dir() else []:
        if p.name.startswith(PARTIAL) or p.name.startswith("."):
            n["partial"] += 1
            continue
        if p.name in NOT_RUNS:
            continue
        assert is_complete(p), f"{p} looks like a run but has no {MARKER} marker"
        run = read_run(p)
        assert run.summary["config_hash"] == p.name.split("-")[2]
        assert len(run.data.accuracy) == run.summary["timesteps"] == run.config["sim"]["timesteps"]
        assert snn.load(p / "network.h5").graph.nodes
        n["complete"] += 1
    return n


def _digest(run_dir: Path) -> dict[str, str]:
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(run_dir.rglob("*")) if f.is_file()}


def _points(root: Path, name: str) -> list[tuple]:
    out = []
    for r in list_runs(root, name):
        c = yaml.safe_load((r / "config.yaml").read_text())
        out.append((c["sim"]["timesteps"], c["convert"]["method"]))
    return sorted(out)


def kill_once(cmd: list[str], cwd: Path, exp: Path, rng: random.Random, mode: str, window: float) -> dict:
    """Start ``cmd`` and SIGKILL its process group: at a uniform random time in
    ``[0.3, window]`` s (``mode="random"``), or a random 0-50 ms after a partial run
    folder appears, i.e. while a run is being written (``mode="publish"``). Returns what
    happened: whether it was still running, whether a partial folder existed at the kill."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    t0 = time.monotonic()
    deadline = t0 + (rng.uniform(0.3, window) if mode == "random" else 300)
    while time.monotonic() < deadline and proc.poll() is None:
        if mode == "publish" and exp.is_dir() and any(p.name.startswith(PARTIAL) for p in exp.iterdir()):
            time.sleep(rng.uniform(0, 0.05))
            break
        time.sleep(0.005)
    writing = exp.is_dir() and any(p.name.startswith(PARTIAL) for p in exp.iterdir())
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    rc = proc.wait(timeout=60)
    assert alive or rc == 0, f"{' '.join(cmd)} failed on its own (exit code {rc})"
    return {"killed": alive, "while_writing": alive and writing, "seconds": time.monotonic() - t0}


def _resume(cfg: Path, root: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    p = subprocess.run(_cli("sweep", str(cfg), "--results", str(root), *extra), cwd=cwd, env=_env(),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _assert_resumed_exactly(p: subprocess.CompletedProcess, root: Path, name: str, before: dict[str, dict],
                            n_points: int) -> None:
    """The resume ran exactly the missing points; the runs complete before it are untouched."""
    assert f"{len(before)} already complete, {n_points - len(before)} to run" in p.stderr, p.stderr[-2000:]
    final = list_runs(root, name)
    assert len(final) == n_points == len(set(_points(root, name)))
    for run_name, digest in before.items():
        assert _digest(root / name / run_name) == digest, f"{run_name} changed on resume"
    assert not [q for q in (root / name).iterdir() if q.name.startswith(".")]


SWEEP = {"sim.timesteps": [2, 3], "convert.method": ["max", "percentile"]}


def test_killed_run_and_sweep_then_resume(tmp_path):
    """The default suite's few kills: `snn run` and `snn sweep` killed while writing a run
    (the riskiest moment), then a resume that runs exactly the missing points."""
    rng = random.Random(15)
    root = tmp_path / "results"
    run_cfg, sweep_cfg = _config(tmp_path, "kr"), _config(tmp_path, "ks", SWEEP)
    _train_first(run_cfg)
    k = kill_once(_cli("run", str(run_cfg), "--results", str(root)), tmp_path, root / "kr", rng, "publish", 0)
    # killed while writing: no run, or (the kill landed just after the rename that publishes it, on a
    # busy machine) one complete run; assert_sound checks that whatever looks like a run is whole
    assert k["killed"] and assert_sound(root, "kr")["complete"] <= 1
    kill_once(_cli("sweep", str(sweep_cfg), "--results", str(root)), tmp_path, root / "ks", rng, "publish", 0)
    before = {r.name: _digest(r) for r in list_runs(root, "ks")}
    assert assert_sound(root, "ks")["complete"] == len(before) < 4
    _assert_resumed_exactly(_resume(sweep_cfg, root, tmp_path), root, "ks", before, 4)
    assert_sound(root, "ks")


@pytest.mark.slow
def test_kill_loop(tmp_path):
    """20 SIGKILLs, 10 of `snn run` and 10 of a 48-point `snn sweep` (1 or 2 workers), half
    at random times, half while a run is being written; after each, every run-like folder
    is complete and reads back; finally the sweep resumes and runs exactly the missing
    points. Prints the counts."""
    rng = random.Random(20261129)
    root = tmp_path / "results"
    sweep = {"sim.timesteps": list(range(2, 26)), "convert.method": ["max", "percentile"]}
    run_cfg, sweep_cfg = _config(tmp_path, "lr", report=True), _config(tmp_path, "ls", sweep, report=True)
    _train_first(run_cfg)
    t0 = time.monotonic()  # an uninterrupted run sets the window of random kill times
    subprocess.run(_cli("run", str(run_cfg), "--results", str(tmp_path / "ref")), cwd=tmp_path, env=_env(),
                   check=True, capture_output=True, timeout=600)
    window = 1.2 * (time.monotonic() - t0)
    counts = {c: {"kills": 0, "alive_at_kill": 0, "while_writing": 0, "finished_first": 0}
              for c in ("run", "sweep")}
    partials = 0
    for i in range(20):
        command, mode = ("run", "sweep")[i % 2], ("random", "publish")[(i // 2) % 2]
        name, cfg = ("ls", sweep_cfg) if command == "sweep" else ("lr", run_cfg)
        extra = ["--workers", "2"] if i % 4 == 3 else []
        k = kill_once(_cli(command, str(cfg), "--results", str(root), *extra), tmp_path, root / name, rng, mode,
                      window)
        c = counts[command]
        c["kills"] += 1
        c["alive_at_kill"] += k["killed"]
        c["while_writing"] += k["while_writing"]
        c["finished_first"] += not k["killed"]
        partials += assert_sound(root, name)["partial"]  # raises on a run-like folder that is not complete
    before = {r.name: _digest(r) for r in list_runs(root, "ls")}
    p = _resume(sweep_cfg, root, tmp_path)
    _assert_resumed_exactly(p, root, "ls", before, 48)
    out = {**counts, "hidden_partials_seen_after_kills": partials, "sweep_runs_complete_before_resume": len(before),
           "sweep_runs_by_resume": 48 - len(before), "run_runs_complete": assert_sound(root, "lr")["complete"],
           "unsound_folders": 0}
    print("\nkill loop:", json.dumps(out))
    assert len(before) < 48  # the resume had points to run
    assert counts["run"]["while_writing"] + counts["sweep"]["while_writing"] >= 5  # hit the publication window


# --------------------------------------------------------------------------- full disk, read-only folder
def _namespace_ok() -> bool:
    """Whether this machine lets an unprivileged user namespace mount (a tmpfs, a
    read-only bind): real ENOSPC and EROFS without touching the host."""
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode == 0


def _previous_run(tmp_path: Path, name: str) -> tuple[Path, Path, dict[str, str]]:
    """A complete earlier run of ``name`` under ``tmp_path/results``: (config, run dir, digest)."""
    cfg = _config(tmp_path, name)
    run = snn.run_experiment(str(cfg), results_dir=tmp_path / "results", progress=False, log=lambda m: None)
    return cfg, run.path, _digest(run.path)


def _one_line_error(p: subprocess.CompletedProcess, *expected: str) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert lines and lines[-1].startswith("snn ") and any(e in lines[-1] for e in expected), p.stderr[-3000:]
    return lines[-1]


def test_full_disk_is_a_clear_error_and_keeps_earlier_runs(tmp_path):
    """A results folder on a nearly full file system (a 4 MiB tmpfs with 16 KiB left, in a
    user namespace; else a 16 KiB file-size limit): exit 2, one line, the earlier run
    intact, no partial folder."""
    cfg, prev, digest = _previous_run(tmp_path, "df")
    root = tmp_path / "results"
    cmd = " ".join(_cli("run", str(cfg), "--results", str(root)))
    if _namespace_ok():
        saved = tmp_path / "saved"
        shutil.copytree(root, saved, symlinks=True)
        script = (f"set -e; mount -t tmpfs -o size=4m tmpfs {root}; cp -a {saved}/. {root}/; "
                  f"cat /dev/zero > {root}/fill 2>/dev/null || true; truncate -s -16K {root}/fill; "
                  f"set +e; {cmd}; echo $? > {tmp_path}/rc; rm {root}/fill; cp -a {root}/. {tmp_path}/after/")
        p = subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=tmp_path, env=_env(), capture_output=True,
                           text=True, timeout=600)
        p.returncode = int((tmp_path / "rc").read_text())
        after = tmp_path / "after"
        expected = ("No space left on device",)
    else:
        import resource

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

        p = subprocess.run(cmd.split(), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
                           preexec_fn=limit)
        after, expected = root, ("File too large", "No space left on device")
    line = _one_line_error(p, *expected)
    assert "cannot write the run into" in line and "earlier runs are untouched" in line
    assert _digest(after / "df" / prev.name) == digest
    assert sorted(q.name for q in (after / "df").iterdir()) == [prev.name]
    assert read_run(after / "df" / prev.name).summary["experiment"] == "df"


def test_read_only_results_folder_is_a_clear_error_before_any_work(tmp_path):
    """A read-only results folder (a read-only bind mount in a user namespace; else, not
    as root, mode 0555): `snn run` and `snn sweep` exit 2 with one line before the data is
    loaded, and the earlier run is untouched."""
    cfg, prev, digest = _previous_run(tmp_path, "ro")
    sweep_cfg = _config(tmp_path, "ro2", {"sim.timesteps": [2, 3]})
    root = tmp_path / "results"
    cmds = [_cli("run", str(cfg), "--results", str(root)), _cli("sweep", str(sweep_cfg), "--results", str(root))]
    if _namespace_ok():
        procs = []
        for i, cmd in enumerate(cmds):
            script = (f"mount --bind {root} {root} && mount -o remount,bind,ro {root} && "
                      f"{' '.join(cmd)} 2> {tmp_path}/err{i}; echo $? > {tmp_path}/rc{i}")
            subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=tmp_path, env=_env(), timeout=600, check=True)
            procs.append(subprocess.CompletedProcess(cmd, int((tmp_path / f"rc{i}").read_text()), "",
                                                     (tmp_path / f"err{i}").read_text()))
        expected = "read-only file system"
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores file modes and no user namespace can mount a read-only folder here")
        for d in (root, root / "ro"):
            d.chmod(0o555)
        try:
            procs = [subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
                     for cmd in cmds]
        finally:
            for d in (root, root / "ro"):
                d.chmod(0o755)
        expected = "no write permission"
    for p in procs:
        line = _one_line_error(p, expected)
        assert "cannot write results under" in line and "data:" not in p.stderr  # before the data was loaded
    assert _digest(prev) == digest and sorted(q.name for q in root.iterdir()) == ["ro"]


# --------------------------------------------------------------------------- a Ray worker killed
def _ray_task_pids(task: str = "run_point") -> list[int]:
    """Processes whose title is Ray's ``ray::<task>`` (a worker running that task)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(f"ray::{task}".encode()):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


@pytest.mark.slow
@pytest.mark.ray
def test_ray_worker_killed_mid_sweep_is_redone(tmp_path):
    pytest.importorskip("ray")
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("needs /proc to find the Ray worker")
    cfg, root = _config(tmp_path, "rk", {"sim.timesteps": [2, 3]}), tmp_path / "results"
    _train_first(cfg)
    proc = subprocess.Popen(_cli("sweep", str(cfg), "--ray", "--workers", "2", "--results", str(root)), cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline, victim = time.monotonic() + 300, None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        pids = _ray_task_pids()
        if pids:
            time.sleep(0.5)
            victim = pids[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert victim is not None, "no Ray worker ran a point"
    assert proc.returncode == 0, err[-3000:]
    assert "died (WorkerCrashedError); running it again (retry 1/2)" in err, err[-3000:]
    assert "2/2 runs complete" in out and [t for t, _ in _points(root, "rk")] == [2, 3]
    assert assert_sound(root, "rk") == {"complete": 2, "partial": 0}


def _children(pid: int, marker: str) -> list[int]:
    """Child processes of ``pid`` whose command line contains ``marker``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == pid and marker.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


@pytest.mark.slow
def test_local_worker_killed_mid_sweep_is_redone(tmp_path):
    """`snn sweep --workers 2` with one worker process SIGKILLed while it runs a point: the
    broken pool's points run again in a new one and the sweep finishes with every point."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the worker processes")
    cfg, root = _config(tmp_path, "lk", SWEEP), tmp_path / "results"
    _train_first(cfg)
    proc = subprocess.Popen(_cli("sweep", str(cfg), "--workers", "2", "--results", str(root)), cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    # the victim: the worker whose partial run folder (named with its pid) appears first, killed
    # at once, i.e. while it writes a point (a fixed delay raced the sweep on a fast machine)
    deadline, victim, exp = time.monotonic() + 300, None, root / "lk"
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        pids = set(_children(proc.pid, "spawn_main"))
        writers = [int(p.name.rsplit("-", 1)[1]) for p in (exp.iterdir() if exp.is_dir() else [])
                   if p.name.startswith(PARTIAL)]
        victim = next((w for w in writers if w in pids), None)
        if victim is not None:
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.005)
    out, err = proc.communicate(timeout=900)
    assert victim is not None, "no worker process started"
    assert proc.returncode == 0, err[-3000:]
    assert "a worker process died while" in err and "running it again (retry 1/2)" in err, err[-3000:]
    assert "4/4 runs complete" in out and len(_points(root, "lk")) == 4
    assert assert_sound(root, "lk") == {"complete": 4, "partial": 0}
