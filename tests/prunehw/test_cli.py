"""The CLI as users meet it: bad input gets one line and a non-zero exit, runs are deterministic."""

import hashlib
import json

import numpy as np
import pytest

from cli_helpers import run_cli, write_config


def _one_error_line(res):
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.mark.parametrize("extra, message", [
    ('[network]\nlayers = [{type = "conv3d", filters = 2}, {type = "dense", units = 10}]', "network.layers[0].type = 'conv3d' is unknown; allowed: conv2d, depthwise2d, dense"),
    ('[[variants]]\nmethod = "matrix"\nratio = 1.2', "ratio = 1.2 is out of range"),
])
def test_bad_config(tmp_path, extra, message):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "build", extra)
    line = _one_error_line(run_cli("train", "--config", str(cfg), cwd=tmp_path))
    assert message in line


@pytest.mark.parametrize("ratio", ["1.0", "-0.5", "1.5"])
def test_prune_ratio_out_of_range(tmp_path, ratio):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "build")
    line = _one_error_line(run_cli("prune", "--config", str(cfg), "--method", "unstructured", "--ratio", ratio, cwd=tmp_path))
    assert "out of range; allowed: 0 <= ratio < 1" in line


def test_data_flag_names_a_missing_or_bad_file(tmp_path):
    """``--data FILE.npz`` replaces MNIST on every stage; a missing or malformed file is one line, nothing written."""
    cfg = write_config(tmp_path / "c.toml", tmp_path / "build")
    line = _one_error_line(run_cli("train", "--config", str(cfg), "--data", str(tmp_path / "none.npz"), cwd=tmp_path))
    assert "data file not found" in line and "none.npz" in line
    import numpy as np

    np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 8, 8), np.uint8))
    line = _one_error_line(run_cli("train", "--config", str(cfg), "--data", str(tmp_path / "bad.npz"), cwd=tmp_path))
    assert "lacks key 'y_train'" in line
    assert not (tmp_path / "build" / "t" / "dense" / "model.keras").exists()


def _model_with(tmp_path, mutate):
    import keras

    from prunehw.core.config import NetworkConfig
    from prunehw.model.network import build_model

    model = build_model(NetworkConfig(), (28, 28, 1), 10, seed=0)
    mutate(model)
    path = tmp_path / "user.keras"
    model.save(path)
    return path


def _nan(model):
    k = model.layers[0].kernel.numpy()
    k[0, 0, 0, 0] = np.nan
    model.layers[0].kernel.assign(k)


@pytest.mark.parametrize("case, message", [
    ("missing", "model file not found"),
    ("corrupt", "is corrupt or not a Keras model"),
    ("nan", "weight 'kernel' holds NaN or inf"),
])
def test_bad_model_file(tmp_path, case, message):
    if case == "missing":
        path = tmp_path / "none.keras"
    elif case == "corrupt":
        path = tmp_path / "bad.keras"
        path.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        path = _model_with(tmp_path, _nan)
    build = tmp_path / "build"
    cfg = write_config(tmp_path / "c.toml", build)
    line = _one_error_line(run_cli("prune", "--config", str(cfg), "--method", "matrix", "--ratio", "0.5",
                                   "--model", str(path), cwd=tmp_path))
    assert message in line
    assert not list(build.rglob("*.keras")), "no artifact may be left behind"
    assert not list(build.rglob(".*.keras*")), "no temp file may be left behind"


def test_model_of_wrong_input_shape(tmp_path):
    import keras

    from prunehw.core.config import NetworkConfig
    from prunehw.model.network import build_model

    path = tmp_path / "m.keras"
    build_model(NetworkConfig(), (32, 32, 1), 10, seed=0).save(path)
    cfg = write_config(tmp_path / "c.toml", tmp_path / "build")
    line = _one_error_line(run_cli("prune", "--config", str(cfg), "--method", "unstructured", "--ratio", "0.5",
                                   "--model", str(path), cwd=tmp_path))
    assert "model input shape (32, 32, 1) does not match the data's images (28, 28, 1)" in line


def _weights_hash(path):
    from prunehw.model.network import load_model

    h = hashlib.sha256()
    for w in load_model(path).get_weights():
        h.update(w.tobytes())
    return h.hexdigest()


def test_same_config_gives_same_bits_and_cache_skips(tmp_path):
    hashes = []
    for i in range(2):
        cfg = write_config(tmp_path / f"c{i}.toml", tmp_path / f"build{i}")
        res = run_cli("prune", "--config", str(cfg), "--method", "unstructured", "--ratio", "0.8", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "%|" not in res.stderr + res.stdout, "progress bars belong on a terminal, not in a pipe"
        run = tmp_path / f"build{i}" / "t"
        hashes.append((_weights_hash(run / "dense" / "model.keras"), _weights_hash(run / "unstructured-0.80" / "model.keras")))
    assert hashes[0] == hashes[1]
    summary = json.loads((tmp_path / "build0" / "t" / "summary.json").read_text())
    v = summary["variants"]["unstructured-0.80"]
    assert v["ratio_measured"] == pytest.approx(0.8, abs=1e-4)
    assert v["weights_kept"] == round(v["weights_total"] * 0.2)
    again = run_cli("prune", "--config", str(tmp_path / "c0.toml"), "--method", "unstructured", "--ratio", "0.8", cwd=tmp_path)
    assert "train: up to date" in again.stdout and "prune unstructured-0.80: up to date" in again.stdout


def test_model_too_big_for_the_device_is_refused_at_import(tmp_path):
    """A user model whose accelerator memories exceed the LFE5U-85F's block RAM is refused when it is imported
    (one line naming the layer and the limit), not after pruning and quantizing; nothing is written."""
    import keras

    L = keras.layers
    path = tmp_path / "big.keras"
    keras.Sequential([keras.Input((28, 28, 1)), L.Flatten(), L.Dense(2048, activation="relu"),
                      L.Dense(10)]).save(path)
    build = tmp_path / "build"
    cfg = write_config(tmp_path / "c.toml", build)
    line = _one_error_line(run_cli("train", "--config", str(cfg), "--model", str(path), cwd=tmp_path))
    assert "Mbit" in line and "LFE5U-85F" in line and "layer 'dense" in line, line
    assert not list(build.rglob("*.keras"))


def test_every_flag_is_explained_and_the_tool_says_what_it_is():
    """--version, a description of the tool at the top, help on every flag of every command, and the shared
    flags (--images, --workers, --variant) worded alike wherever they appear."""
    import argparse

    from prunehw.cli import _parser

    parser = _parser()
    assert "verified hardware" in parser.description
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    wording = {}
    for name, p in sub.choices.items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            flag = action.option_strings[0]
            if flag in ("--images", "--variant") or (flag == "--workers" and name != "explore"):
                wording.setdefault(flag, set()).add(action.help.split(" (")[0].split(", 0 = all")[0])
    assert all(len(texts) <= 2 for texts in wording.values()), wording
    assert "--force" not in {a.option_strings[0] for a in sub.choices["report"]._actions if a.option_strings}


def test_version(tmp_path):
    res = run_cli("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("prunehw ")


def test_prune_imports_its_model_as_train_does(tmp_path):
    """``prune --model`` takes the file through the same import as ``train --model``: a fused relu (refused by
    prune before) is rewritten, checked against the user's model, and pruned."""
    import keras

    L = keras.layers
    path = tmp_path / "fused.keras"
    keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                      L.Dense(10, activation="softmax")]).save(path)
    cfg = write_config(tmp_path / "c.toml", tmp_path / "build")
    res = run_cli("prune", "--config", str(cfg), "--method", "unstructured", "--ratio", "0.5", "--model", str(path),
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    from prunehw.model.network import load_model

    pruned = load_model(tmp_path / "build" / "t" / "unstructured-0.50" / "model.keras")
    assert [type(l).__name__ for l in pruned.layers] == ["Conv2D", "ReLU", "MaxPooling2D", "Flatten", "Dense"]


def test_report_leaves_out_the_variants_a_command_did_not_make(tmp_path):
    """A command given ``--variant dense`` (``synth`` and ``board`` end with the report) makes that variant only;
    the report then covers what was made and names each configured variant it left out, instead of failing on
    a missing model file."""
    cfg = write_config(tmp_path / "c.toml", tmp_path / "build")
    res = run_cli("quantize", "--config", str(cfg), "--variant", "dense", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = run_cli("report", "--config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    from prunehw.core.config import load_config

    others = [v for v in load_config(cfg).variant_names if v != "dense"]
    assert others and all(f"report: {v} not made yet" in res.stdout for v in others), res.stdout
    summary = json.loads((tmp_path / "build" / "t" / "summary.json").read_text())
    assert set(summary["variants"]) == {"dense"} and summary["variants"]["dense"]["storage_bytes"]
