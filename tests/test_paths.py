"""Path safety: no experiment name, ``output.dir``, sweep key or symbolic link makes a run
write outside its results root; colliding run names never overwrite a complete run.

The rules are in the docstring of :mod:`snn.results`; README "Guarantees" lists them."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

from snn.cli import main
from snn.errors import SnnError
from snn.results import experiment_dir, find_run, is_complete, list_runs, new_run
from snn.sweep import plan, run_sweep


def _tree(root: Path) -> set[str]:
    """Every path under ``root`` (links not followed), relative."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _fill(path: Path) -> None:
    (path / "config.yaml").write_text("name: e\n")
    (path / "summary.json").write_text("{}")


ESCAPES = {
    "name ../": ("name: ../outside\n", "name: String should match pattern"),
    "name absolute": ("name: /tmp/outside\n", "name: String should match pattern"),
    "name with /": ("name: a/b\n", "name: String should match pattern"),
    "name hidden": ("name: .partial-x\n", "name: String should match pattern"),
    "name too long": (f"name: {'a' * 300}\n", "name: String should have at most 128 characters"),
    "output.dir absolute": ("name: x\noutput: {dir: OUTSIDE}\n", "output.dir: must be a folder inside the working"),
    "output.dir ../": ("name: x\noutput: {dir: ../outside}\n", "output.dir: must be a folder inside the working"),
    "output.dir a/../../": ("name: x\noutput: {dir: a/../../outside}\n", "output.dir: must be a folder inside"),
    "output.dir ~": ("name: x\noutput: {dir: ~/outside}\n", "output.dir: must be a folder inside the working"),
    "sweep output.dir": ("name: x\nsweep: {output.dir: [OUTSIDE]}\n", "'output.dir' cannot be swept"),
    "sweep name": ("name: x\nsweep: {name: [../outside]}\n", "'name' cannot be swept"),
    "sweep key ../": ("name: x\nsweep: {../outside: [1]}\n", "unknown key"),
    "sweep key output": ("name: x\nsweep: {output: [{dir: OUTSIDE}]}\n", "'output' cannot be swept"),
}


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("case", list(ESCAPES))
def test_names_and_dirs_that_leave_the_root_are_refused(case, command, tmp_path, monkeypatch, capsys):
    """Exit 2, one line naming the key, before any work; nothing written anywhere."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    monkeypatch.chdir(work)
    text, expected = ESCAPES[case]
    (work / "cfg.yaml").write_text(text.replace("OUTSIDE", str(outside)))
    before = _tree(tmp_path)
    assert main([command, "cfg.yaml"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert _tree(tmp_path) == before and not outside.exists()


def test_the_command_line_chooses_any_root(tmp_path, monkeypatch, capsys):
    """``--set output.dir=/abs`` is the config's key (refused); ``--results /abs`` is the
    person running it choosing the root (accepted as far as the paths go)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text("name: x\ndata: {name: mnist, root: nowhere}\nmodel: {name: lenet5}\n")
    assert main(["run", "cfg.yaml", "--set", f"output.dir={tmp_path / 'abs'}"]) == 2
    assert "output.dir: must be a folder inside the working directory" in capsys.readouterr().err
    assert main(["run", "cfg.yaml", "--results", str(tmp_path / "abs")]) == 2  # passes the paths, fails on the data
    err = capsys.readouterr().err
    assert "output.dir" not in err and "mnist" in err and not (tmp_path / "abs").exists()


@pytest.mark.parametrize("name", ["../x", "..", ".", "", "/abs", "a/b", ".hidden", "a\0b"])
def test_api_refuses_names_that_are_not_one_folder(name, tmp_path):
    """The Python API (no config validation in between) applies the same rule."""
    with pytest.raises(SnnError, match="is not a plain folder name"):
        experiment_dir(tmp_path / "results", name)
    with pytest.raises(SnnError, match="is not a plain folder name"):
        with new_run(tmp_path / "results", name, "h"):
            pass
    assert _tree(tmp_path) == set()


def test_symlinked_experiment_folder_is_refused_before_any_work(tmp_path):
    """Decision: below the results root nothing is written through a link (the error names
    it and its target); the run fails before its data is loaded."""
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "results"
    elsewhere.mkdir()
    root.mkdir()
    (root / "e").symlink_to(elsewhere)
    with pytest.raises(SnnError, match=r"results/e is a symbolic link \(to .*elsewhere\)"):
        experiment_dir(root, "e")
    with pytest.raises(SnnError, match="is a symbolic link"):
        with new_run(root, "e", "h") as r:
            _fill(r.path)
    from snn.runner import run_experiment  # fails in the path check, before the (missing) data

    with pytest.raises(SnnError, match="is a symbolic link"):
        run_experiment({"name": "e", "data": {"name": "mnist", "root": str(tmp_path / "none")},
                        "model": {"name": "lenet5"}}, results_dir=root)
    assert list(elsewhere.iterdir()) == []


def test_symlinked_sweep_comparison_folder_is_refused_before_any_run(tmp_path):
    root, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    (root / "sw").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "sw" / "sweep").symlink_to(elsewhere)
    cfg = {"name": "sw", "data": {"name": "mnist", "root": str(tmp_path / "none")}, "model": {"name": "lenet5"},
           "sweep": {"sim.timesteps": [2, 3]}}
    with pytest.raises(SnnError, match="sw/sweep is a symbolic link"):
        run_sweep(cfg, results_dir=root, log=lambda m: None)
    assert list(elsewhere.iterdir()) == [] and [p.name for p in (root / "sw").iterdir()] == ["sweep"]


def test_symlinked_root_is_followed(tmp_path):
    """Decision: the root itself may be a link (results kept on another disk)."""
    real = tmp_path / "disk" / "results"
    real.mkdir(parents=True)
    (tmp_path / "results").symlink_to(real)
    with new_run(tmp_path / "results", "e", "h1") as r:
        _fill(r.path)
    assert r.final.parent == real / "e" and is_complete(r.final)
    assert [p.name for p in list_runs(tmp_path / "results", "e")] == [r.final.name]


def test_links_below_the_root_are_not_runs(tmp_path):
    """A link to a complete run (or to an experiment) is skipped by readers, so it cannot
    make a sweep skip its point."""
    other = tmp_path / "other"
    with new_run(other, "sw", "abc") as r:
        _fill(r.path)
    root = tmp_path / "results"
    (root / "sw").mkdir(parents=True)
    (root / "sw" / r.final.name).symlink_to(r.final)
    (root / "linked").symlink_to(other / "sw")
    assert not is_complete(root / "sw" / r.final.name)
    assert list_runs(root) == [] and find_run(root, "sw", "abc") is None

    from snn.config import config_hash, expand_sweep, load_config

    cfg = load_config({"name": "sw", "sweep": {"sim.timesteps": [2]}})
    h = config_hash(expand_sweep(cfg)[0][1])
    with new_run(other, "sw", h) as r2:
        _fill(r2.path)
    (root / "sw" / r2.final.name).symlink_to(r2.final)
    todo, done = plan(cfg, root)
    assert len(todo) == 1 and done == []


def test_colliding_run_names_never_overwrite(tmp_path):
    """Runs of one config published at once (same second, same hash), from threads racing
    for the same name: each gets its own folder, every one complete."""
    n, barrier = 8, threading.Barrier(8, timeout=60)
    finals: list[Path] = []

    def one(i: int) -> None:
        with new_run(tmp_path, "e", "samehash") as r:
            (r.path / "summary.json").write_text(str(i))
            (r.path / "config.yaml").write_text("name: e\n")
            barrier.wait()
        finals.append(r.final)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(finals)) == n == len(list_runs(tmp_path, "e"))
    assert sorted(int((f / "summary.json").read_text()) for f in finals) == list(range(n))
    assert not [p for p in (tmp_path / "e").iterdir() if p.name.startswith(".")]


def test_experiment_named_like_a_comparison_folder_collides_with_nothing(tmp_path):
    """`snn compare` writes ``<root>/compare/<timestamp>/`` and a sweep ``<exp>/sweep/``:
    neither is a run (no marker), so an experiment named ``compare`` or ``sweep`` only adds
    its own ``<timestamp>-<hash>`` folders beside them."""
    (tmp_path / "compare" / "20260101-000000").mkdir(parents=True)
    (tmp_path / "compare" / "20260101-000000" / "compare.md").write_text("x")
    with new_run(tmp_path, "compare", "h") as r:
        _fill(r.path)
    assert list_runs(tmp_path, "compare") == [r.final]
    assert (tmp_path / "compare" / "20260101-000000" / "compare.md").read_text() == "x"
    assert yaml.safe_load((r.final / "config.yaml").read_text()) == {"name": "e"}
    assert os.path.commonpath([r.final, tmp_path]) == str(tmp_path)
