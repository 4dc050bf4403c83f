"""Trust: the same config gives the same bits; a stage killed midway leaves the previous good state."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import write_config

ARTIFACTS = ["matrix-0.80/contract.json", "matrix-0.80/weights.npz", "matrix-0.80/rtl/prunehw_top.v",
             "matrix-0.80/rtl/accelerator.json", "matrix-0.80/index_maps.json"]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _figures(summary: dict) -> dict:
    summary = json.loads(json.dumps(summary))
    summary.pop("train", None)  # wall-clock timings differ run to run
    return summary


def test_same_config_twice_gives_identical_artifacts(tmp_path):
    runs = []
    for i in range(2):
        cfg = write_config(tmp_path / f"c{i}.toml", tmp_path / f"b{i}")
        res = subprocess.run([sys.executable, "-m", "prunehw.cli", "rtl", "--config", str(cfg), "--variant", "matrix-0.80"],
                             cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        run = tmp_path / f"b{i}" / "t"
        runs.append(({a: _sha(run / a) for a in ARTIFACTS}, _figures(json.loads((run / "summary.json").read_text()))))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]


def test_killed_stage_leaves_previous_state_and_resumes(tmp_path):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "b")
    # a long pruning stage, so the kill lands inside it
    cfg.write_text(cfg.read_text().replace("finetune_epochs = 1", "finetune_epochs = 30"))
    run = tmp_path / "b" / "t"
    cmd = [sys.executable, "-m", "prunehw.cli", "prune", "--config", str(cfg), "--method", "unstructured", "--ratio", "0.8"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    manifest = run / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if manifest.is_file() and "train" in json.loads(manifest.read_text()).get("stages", {}):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training never finished")
    time.sleep(2.0)  # into the pruning stage
    assert proc.poll() is None, "the prune stage ended before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    dense = run / "dense" / "model.keras"
    dense_hash = _sha(dense)
    stages = json.loads(manifest.read_text())["stages"]
    assert "train" in stages and "prune:unstructured-0.80" not in stages
    assert not (run / "unstructured-0.80" / "model.keras").exists()
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "train: up to date" in res.stdout
    assert "prune unstructured-0.80: iterative" in res.stdout
    assert _sha(dense) == dense_hash
    assert not list(run.rglob(".prunehw-tmp-*")), "stale temporaries are removed"
