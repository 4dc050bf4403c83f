"""Design-space exploration: the sweep file, Pareto fronts, and sweeps on a local Ray instance (kill/resume, failures)."""

from __future__ import annotations

import collections
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunehw.core.errors import ConfigError
from prunehw.explore import grid, load_sweep, pareto_front

ROOT = Path(__file__).resolve().parents[2]


def _sweep(path: Path, body: str, base: str | None = None) -> Path:
    path.write_text((f'[sweep]\nbase = "{base}"\n' if base else "[sweep]\n") + body)
    return path


def test_default_sweep_shares_its_stages():
    sweep = load_sweep(ROOT / "configs" / "explore.toml")
    points = grid(sweep)
    ids = [p.id for p in points]
    assert len(points) >= 60 and len(set(ids)) == len(ids)
    from prunehw.explore import _prune_key, _quant_key

    # one pruned model serves every bit width and array size; one contract every array size
    assert len({_prune_key(sweep, p) for p in points}) == 15
    assert len({_quant_key(sweep, p) for p in points}) == 45
    assert {p.criterion for p in points if p.method == "unstructured"} == {"l1"}


@pytest.mark.parametrize("body, message", [
    ("[axes]\nratio = [1.0]\n", "axes.ratio[0] = 1.0 is out of range; allowed: 0 <= ratio < 1"),
    ("[axes]\nratio = [0.5, -0.1]\n", "axes.ratio[1] = -0.1 is out of range"),
    ("[axes]\nweight_bits = [9]\n", "axes.weight_bits[0] = 9; allowed: integers 2..8"),
    ("[axes]\nweight_bits = [true]\n", "axes.weight_bits[0] must be an integer, got bool True"),
    ("[axes]\ndataflow = ['os']\n", "axes.dataflow[0] = 'os' is not built (no RTL, so no verified cycle model); allowed: ws"),
    ("[axes]\narray = ['8by8']\n", "axes.array[0] = '8by8' is not an array size; allowed: 'RxC' such as '8x8'"),
    ("[axes]\narray = ['0x8']\n", "axes.array[0] = '0x8' must have rows and columns >= 1"),
    ("[axes]\nmethod = ['channel']\n", "axes.method[0] = 'channel' is unknown; allowed: unstructured, matrix"),
    ("[axes]\nlayers = [1]\n", "[axes] unknown axis 'layers'; allowed: method, ratio, criterion, weight_bits, array, dataflow"),
    ("[axes]\nratio = []\n", "axes.ratio must be a non-empty list"),
    ("[axes]\nratio = 0.5\n", "axes.ratio must be a list, got float 0.5"),
    ("[axes]\nratio = [0.5, 0.5]\n", "axes.ratio: the value 0.5 is listed twice"),
    ("retries = -1\n[axes]\n", "sweep.retries = -1 must be >= 0"),
    ("verify = 'all'\n[axes]\n", "sweep.verify = 'all' is unknown; allowed: none, pareto"),
    ("verfiy = 'all'\n[axes]\n", "[sweep] unknown key 'verfiy'; allowed: name, base, retries, tile_aware, verify"),
    ("tile_aware = 1\n[axes]\n", "sweep.tile_aware must be true or false, got int 1"),
    ("name = 'a/b'\n[axes]\n", "sweep.name = 'a/b'; allowed: a plain folder name"),
    ("operating_point = { bits = 8 }\n[axes]\n", "[sweep.operating_point] unknown key 'bits'; allowed: method, ratio"),
    ("[axes]\n[train]\nepochs = 1\n", "sweep file: unknown section 'train'"),
    ("", "[axes] is missing"),
    ("[axes]\n[prune]\nsteps = 0\n", "prune.steps = 0 must be > 0"),
])
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, body, message):
    with pytest.raises(ConfigError) as err:
        load_sweep(_sweep(tmp_path / "s.toml", body))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_base_and_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match="sweep.base: run config not found"):
        load_sweep(_sweep(tmp_path / "s.toml", "[axes]\n", base="nope.toml"))
    with pytest.raises(ConfigError, match="sweep file not found"):
        load_sweep(tmp_path / "absent.toml")


def test_pareto_front_keeps_only_non_dominated_points():
    rows = [{"point": n, "cycles": c, "accuracy_quant": a} for n, c, a in
            [("a", 100, 0.90), ("b", 200, 0.95), ("c", 150, 0.89), ("d", 300, 0.95), ("e", 50, 0.80), ("f", 400, 0.97),
             ("g", 100, 0.85)]]
    assert [r["point"] for r in pareto_front(rows, "cycles")] == ["e", "a", "b", "f"]
    # a point is dominated when another is at least as good on both and better on one
    for r in rows:
        on = r in pareto_front(rows, "cycles")
        dominated = any(o["cycles"] <= r["cycles"] and o["accuracy_quant"] >= r["accuracy_quant"] and
                        (o["cycles"], o["accuracy_quant"]) != (r["cycles"], r["accuracy_quant"]) for o in rows)
        assert on != dominated


# -- sweeps on a local Ray instance, on the QUICK flow's trained model ---------------------------------
TINY_AXES = """
[axes]
method = ["unstructured", "matrix"]
ratio = [0.5, 0.9]
weight_bits = [8]
array = ["4x4", "8x8"]
[prune]
steps = 1
finetune_epochs = 1
"""


@pytest.fixture
def tiny_sweep(quick_flow, tmp_path):
    """An 8-point sweep (4 pruned models) whose base is the QUICK flow, sharing its trained model."""
    base = (ROOT / "configs" / "quick.toml").read_text().replace('build_dir = "../build"',
                                                                 f'build_dir = "{quick_flow.cfg.build_dir}"')
    (tmp_path / "base.toml").write_text(base)
    name = f"tiny-{tmp_path.name}"
    path = _sweep(tmp_path / "sweep.toml", f'name = "{name}"\nretries = 1\n' + TINY_AXES, base="base.toml")
    return load_sweep(path)


def _explore(sweep, *extra, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "prunehw.cli", "explore", "--config", str(sweep.path), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, **kw)


def _rows(path: Path) -> list[dict]:
    text = path.read_text() if path.is_file() else ""
    text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(text.splitlines()))


def test_sweep_killed_midway_resumes_and_computes_every_point_once(tiny_sweep):
    out = tiny_sweep.out_dir
    ids = [p.id for p in grid(tiny_sweep)]
    proc = _explore(tiny_sweep)
    deadline = time.time() + 300
    while len(_rows(out / "points.csv")) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the sweep ended before it could be killed:\n{proc.stdout.read()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["point"]: r for r in _rows(out / "points.csv")}
    assert 1 <= len(before) < len(ids), f"the kill did not land midway: {len(before)} of {len(ids)} rows"

    proc = _explore(tiny_sweep)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert f"{len(ids)} points, {len(before)} already in" in log
    after = _rows(out / "points.csv")
    assert [r["point"] for r in after] == ids                      # every point, once, in grid order
    assert all({**r} == before[r["point"]] for r in after if r["point"] in before)  # earlier rows kept as they were
    journal = collections.Counter(json.loads(line)["point"] for line in (out / "journal.jsonl").read_text().splitlines())
    assert set(journal) == set(ids) and set(journal.values()) == {1}, journal
    assert len({json.loads(line)["pid"] for line in (out / "journal.jsonl").read_text().splitlines()}) == 2
    summary = json.loads((out / "explore.json").read_text())
    assert summary["computed_now"] == len(ids) - len(before) and summary["failed"] == 0
    assert (out / "pareto_cycles.png").stat().st_size > 0 and (out / "pareto_energy.png").stat().st_size > 0
    front = _rows(out / "pareto.csv")
    assert front and all(r["front_cycles"] == "True" or r["front_energy"] == "True" for r in front)


def test_failed_points_are_retried_reported_and_not_fatal(tiny_sweep):
    out = tiny_sweep.out_dir
    ids = [p.id for p in grid(tiny_sweep)]
    flaky, broken = ids[1], ids[5]
    inject = json.dumps({flaky: "once", broken: "always"})
    proc = _explore(tiny_sweep, env={"PRUNEHW_EXPLORE_INJECT": inject})
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2, log
    assert log.strip().splitlines()[-1] == f"error: explore: 1 of {len(ids)} points failed; see {out / 'failed.csv'}"
    assert [r["point"] for r in _rows(out / "points.csv")] == [i for i in ids if i != broken]  # the flaky one retried
    assert [r["point"] for r in _rows(out / "failed.csv")] == [broken]
    assert "injected failure" in _rows(out / "failed.csv")[0]["error"]

    proc = _explore(tiny_sweep)                                   # rerun: only the failed point is computed
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert f"{len(ids)} points, {len(ids) - 1} already in" in log
    assert [r["point"] for r in _rows(out / "points.csv")] == ids and not (out / "failed.csv").exists()


@pytest.mark.regression
def test_pareto_points_verified_in_rtl_equal_their_analytic_figures(tiny_sweep):
    out = tiny_sweep.out_dir
    proc = _explore(tiny_sweep, "--verify", "pareto")
    log, _ = proc.communicate(timeout=3000)
    assert proc.returncode == 0, log
    verified = json.loads((out / "verified.json").read_text())
    front = {r["point"]: r for r in _rows(out / "pareto.csv")}
    assert verified and set(verified) == set(front)
    for point, v in verified.items():
        assert v["rtl_match"] == v["rtl_total"] == tiny_sweep.verify_images, (point, v)
        assert v["rtl_cycles"] == int(front[point]["cycles"]) and v["rtl_equals_analytic"], (point, v)
