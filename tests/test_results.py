"""Results store: atomic run directories, completeness, partial clean-up, results.h5 round
trip and corrupted files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from snn.errors import SnnError
from snn.results import (MARKER, RunData, clean_partials, environment, find_run, is_complete, list_runs, new_run,
                         read_results, read_run, write_results)


def _data() -> RunData:
    return RunData(accuracy=np.array([0.5, 0.75, 0.9]), ann_accuracy=0.92,
                   spikes={"features.0": np.array([3.0, 5.0, 4.0]), "fc/1 odd name": np.array([1.0, 0.0, 2.0])},
                   neurons={"features.0": 10, "fc/1 odd name": 4}, energy={"per_inference_j": {"loihi": 1e-6}},
                   training=[{"epoch": 1, "loss": 0.5}], environment={"torch": "2.x"}, n_samples=20)


def test_results_h5_round_trip(tmp_path):
    d = _data()
    write_results(tmp_path / "r.h5", d)
    r = read_results(tmp_path / "r.h5")
    np.testing.assert_array_equal(r.accuracy, d.accuracy)
    assert list(r.spikes) == list(d.spikes) and r.neurons == d.neurons
    np.testing.assert_array_equal(r.spikes["fc/1 odd name"], d.spikes["fc/1 odd name"])
    assert (r.ann_accuracy, r.energy, r.training, r.environment, r.n_samples, r.timesteps) == (
        0.92, d.energy, d.training, d.environment, 20, 3)
    assert r.firing_rates() == {"features.0": pytest.approx(12 / 30), "fc/1 odd name": pytest.approx(3 / 12)}


def test_corrupted_results_file_is_a_clear_error(tmp_path):
    write_results(tmp_path / "r.h5", _data())
    raw = (tmp_path / "r.h5").read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(SnnError, match="trunc.h5 is corrupted: .* bytes where .* were written"):
        read_results(tmp_path / "trunc.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(SnnError, match="text.h5"):
        read_results(tmp_path / "text.h5")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(SnnError, match="not an snn results file"):
        read_results(tmp_path / "other.h5")
    with pytest.raises(SnnError, match="no results file"):
        read_results(tmp_path / "missing.h5")


def _fill(path):
    (path / "config.yaml").write_text("name: e\n")
    (path / "summary.json").write_text(json.dumps({"experiment": "e"}))
    write_results(path / "results.h5", _data())


def test_new_run_renames_only_on_success(tmp_path):
    with new_run(tmp_path, "e", "abc123") as run:
        assert run.path.name.startswith(".partial-") and run.final is None
        _fill(run.path)
        assert list_runs(tmp_path, "e") == []
    assert run.final.name.endswith("-abc123") and is_complete(run.final) and not run.path.exists()
    assert find_run(tmp_path, "e", "abc123") == run.final and find_run(tmp_path, "e", "zzz") is None
    r = read_run(run.final)
    assert r.config == {"name": "e"} and r.summary == {"experiment": "e"}

    with pytest.raises(RuntimeError):
        with new_run(tmp_path, "e", "def456") as failed:
            _fill(failed.path)
            raise RuntimeError("boom")
    assert not failed.path.exists() and find_run(tmp_path, "e", "def456") is None
    assert [p.name for p in (tmp_path / "e").iterdir()] == [run.final.name]
    # same second, same hash: a second directory, never overwritten
    with new_run(tmp_path, "e", "abc123") as again:
        _fill(again.path)
    assert again.final != run.final and len(list_runs(tmp_path, "e")) == 2


def test_unwritable_results_root_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SnnError, match="cannot write results under"):
        with new_run(tmp_path / "file", "e", "h"):
            pass


def test_incomplete_directories_are_not_runs(tmp_path):
    d = tmp_path / "e" / "20260101-000000-abc123"
    d.mkdir(parents=True)
    _fill(d)
    assert not is_complete(d) and list_runs(tmp_path) == []
    with pytest.raises(SnnError, match="not a complete run"):
        read_run(d)
    (d / MARKER).write_text("{}")
    assert list_runs(tmp_path) == [d]
    (d / "summary.json").write_text("{broken")
    with pytest.raises(SnnError, match="corrupted config.yaml or summary.json"):
        read_run(d)
    with pytest.raises(SnnError, match="no such run directory"):
        read_run(tmp_path / "nope")


def test_partials_of_dead_processes_are_cleaned(tmp_path):
    # a process that creates a partial run and is SIGKILLed before it finishes
    code = ("import os, signal, sys\nfrom snn.results import new_run\n"
            f"with new_run({str(tmp_path)!r}, 'e', 'h1') as r:\n"
            "    (r.path / 'results.h5').write_text('half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", code])
    assert p.returncode == -9
    (partial,) = (tmp_path / "e").iterdir()
    assert partial.name.startswith(".partial-") and list_runs(tmp_path, "e") == []
    with new_run(tmp_path, "e", "h2") as live:  # a live one (this process) is kept
        assert clean_partials(tmp_path, "e") == [partial]
        assert live.path.exists()
        _fill(live.path)
    assert not partial.exists() and [r.name.split("-")[2] for r in list_runs(tmp_path, "e")] == ["h2"]


def test_environment_records_versions_and_commit():
    env = environment("cpu")
    assert env["torch"] != "not installed" and env["device"] == "cpu"
    assert env["python"].count(".") == 2 and env["git_commit"]
    assert int(env["cpu_count"]) == os.cpu_count()
