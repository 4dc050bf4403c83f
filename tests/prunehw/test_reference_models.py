"""The MLPerf Tiny reference models with depthwise-separable convolutions through the whole flow, as a user runs
them: ``prunehw run --model FILE.keras --data FILE.npz``. DS-CNN (keyword spotting, at its reference width) and a
small MobileNetV1 (visual wake words' architecture, GlobalAveragePooling2D) are built from Keras layers
(``tests/reference_models.py``), trained briefly on MNIST shaped to their inputs, imported (batch norms folded,
the softmax dropped), pruned (a dense and a matrix-0.50 variant: each depthwise layer's channels removed with the
filters before it), quantized, and checked bit-exact with the golden model in hls4ml and in Verilator on 1,000 test
images and in Icarus on one, with cycles and every activity counter equal to the analytic model.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import need_tool, run_cli
from reference_models import MODELS, shaped_mnist, trained

from prunehw.sim.runner import simulator_missing

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
#: test images through hls4ml and Verilator per model and variant
IMAGES = 1000


def _assert_verified(summary: dict, v: str, icarus: bool = True) -> None:
    """Variant ``v`` bit-exact in hls4ml and Verilator on every test image and (``icarus``) in Icarus on one, its
    cycles and every counter equal to the analytic model."""
    entry = summary["variants"][v]
    assert entry["bitexact"]["hls"] == {"match": IMAGES, "total": IMAGES}, (v, entry["bitexact"])
    rtl = entry["bitexact"]["rtl_verilator"]
    assert (rtl["match"], rtl["total"]) == (IMAGES, IMAGES), (v, rtl)
    if icarus:
        assert entry["bitexact"]["rtl_icarus"]["match"] == entry["bitexact"]["rtl_icarus"]["total"] == 1, v
    assert entry["cycles"]["rtl_equals_analytic"] and entry["activity_equals_analytic"], v


def _config(tmp_path) -> str:
    text = (ROOT / "configs" / "quick.toml").read_text()
    for old, new in [('build_dir = "../build"', f'build_dir = "{tmp_path / "build"}"'),
                     ("test_limit = 500", "test_limit = 0"), ("hls_images = 200", "hls_images = 0"),
                     ("verilator_images = 200", "verilator_images = 0"), ("icarus_images = 2 ", "icarus_images = 1 ")]:
        assert old in text, f"configs/quick.toml no longer says {old!r}: update this test"
        text = text.replace(old, new)
    return text[:text.index("[[variants]]")] + '[[variants]]\nmethod = "matrix"\nratio = 0.50\n' + \
        text[text.index("[experiments]"):]


@pytest.mark.regression
@pytest.mark.parametrize("name, width", [("ds_cnn", 1.0), ("mobilenet_v1", 1.0)])
def test_a_depthwise_separable_reference_model_runs_the_whole_flow(tmp_path, mnist, name, width):
    need_tool(simulator_missing("verilator"))
    _, shape = MODELS[name]
    x_train, x_test = shaped_mnist(mnist.x_train[:5000], shape), shaped_mnist(mnist.x_test[:IMAGES], shape)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x_train, y_train=mnist.y_train[:5000], x_test=x_test, y_test=mnist.y_test[:IMAGES])
    model = tmp_path / f"{name}.keras"
    trained(name, x_train, mnist.y_train[:5000], epochs=2, width=width).save(model)
    config = tmp_path / "run.toml"
    config.write_text(_config(tmp_path))
    res = subprocess.run([sys.executable, "-m", "prunehw.cli", "run", "--config", str(config), "--model", str(model),
                          "--data", str(data)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    run = tmp_path / "build" / "quick"
    summary = json.loads((run / "summary.json").read_text())
    rewrites = summary["train"]["rewrites"]
    assert any("softmax dropped" in r for r in rewrites) and sum("batch normalization folded" in r for r in rewrites) >= 9
    for v in ("dense", "matrix-0.50"):
        _assert_verified(summary, v)
        # every depthwise layer is grouped on the 8x8 array: kh*kw folds per column tile of channels
        desc = json.loads((run / v / "rtl" / "accelerator.json").read_text())
        contract = json.loads((run / v / "contract.json").read_text())
        dws = {l["name"]: l["out_channels"] for l in contract["layers"] if l["type"] == "depthwise2d"}
        assert len(dws) == (4 if name == "ds_cnn" else 5)
        assert {op["name"] for op in desc["ops"] if op.get("grouped")} == set(dws)
        for layer in desc["ops"]:
            if layer["name"] in dws:
                n_ct = -(-dws[layer["name"]] // 8)
                assert (layer["grouped"], layer["row_tiles"], layer["col_tiles"]) == (True, 9, n_ct), layer
                assert layer["pe_utilization"] == round(dws[layer["name"]] / (n_ct * 64), 4), layer
    dense, pruned = summary["variants"]["dense"], summary["variants"]["matrix-0.50"]
    assert dense["accuracy"]["float"] > 0.7, dense["accuracy"]      # (two epochs on 5,000 images)
    # the pruned depthwise layers keep exactly their sources' channels, so the pruned model is smaller and faster
    assert pruned["weights_kept"] < 0.55 * dense["weights_total"]
    assert pruned["cycles"]["analytic"] < dense["cycles"]["analytic"]


def _run(tmp_path, command: str, config_text: str, model, data, *args: str):
    config = tmp_path / "run.toml"
    config.write_text(config_text)
    return run_cli(command, "--config", str(config), "--model", str(model), "--data", str(data), *args,
                   cwd=tmp_path, timeout=3600)


@pytest.mark.regression
def test_resnet8_runs_the_whole_flow_and_matrix_pruning_cuts_its_cycles(tmp_path, mnist):
    """ResNet-8 (residual Adds, 1x1 stride-2 shortcut convolutions, AveragePooling2D(8)) on 32x32x3, imported as a
    graph: a dense and a matrix-0.50 variant (its channels removed in dependency groups across the adds),
    bit-exact in hls4ml and Verilator on 1,000 test images, every counter equal to the analytic model, and the
    pruned design in Icarus on one image (a few minutes: the dense one's 197k cycles would take three times as
    long and add no structure). Matrix pruning's cycles fall at least in proportion to the MACs it removes: the
    stem's 27 rows (3x3 taps of the image's 3 channels, which no group removes) would fill 4 row tiles of 8, the
    last with 3, a larger share of the pruned network than of the dense one; its 3 weakest taps go, as the tiles
    round a chain's rows, and 24 rows fill 3 tiles. Unstructured pruning at the same ratio is pruned beside it for
    its accuracy (its design is the dense one's with zero weights). A variant the flow cannot make of such a model
    is refused in one line, before anything is written."""
    _, shape = MODELS["resnet8"]
    x_train, x_test = shaped_mnist(mnist.x_train[:5000], shape), shaped_mnist(mnist.x_test[:IMAGES], shape)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x_train, y_train=mnist.y_train[:5000], x_test=x_test, y_test=mnist.y_test[:IMAGES])
    model = tmp_path / "resnet8.keras"
    trained("resnet8", x_train, mnist.y_train[:5000], epochs=2).save(model)
    text = _config(tmp_path)
    res = _run(tmp_path, "run", text.replace("ratio = 0.50\n", 'ratio = 0.50\ncriterion = "taylor"\n'), model, data)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "variant 'matrix-0.50': " in lines[0], res.stderr[-2000:]
    assert not (tmp_path / "build").exists(), "a refused run wrote files"
    text = text.replace("icarus_images = 1 ", "icarus_images = 0 ")     # (Icarus: below, on one variant)
    res = _run(tmp_path, "run", text, model, data)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = _run(tmp_path, "sim", text, model, data, "--simulator", "icarus", "--images", "1", "--variant", "matrix-0.50")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = _run(tmp_path, "prune", text, model, data, "--method", "unstructured", "--ratio", "0.5")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "build" / "quick"
    summary = json.loads((run / "summary.json").read_text())
    assert sum("batch normalization folded" in r for r in summary["train"]["rewrites"]) == 7
    for v in ("dense", "matrix-0.50"):
        _assert_verified(summary, v, icarus=v == "matrix-0.50")
        # the three adds run at the write-back of the convolutions that end their blocks, a third buffer holding
        # the other input
        desc = json.loads((run / v / "rtl" / "accelerator.json").read_text())
        assert len(desc["memories"]["activations"]["buffers"]) == 4
    unstructured = summary["variants"]["unstructured-0.50"]
    assert unstructured["ratio_measured"] >= 0.5 and unstructured["accuracy"]["float"] > 0.5, unstructured
    contract = json.loads((run / "dense" / "contract.json").read_text())
    adds = [l for l in contract["layers"] if l["type"] == "add"]
    assert len(adds) == 3 and all(len(l["inputs"]) == 2 and l["output"]["relu"] for l in adds)
    dense, pruned = summary["variants"]["dense"], summary["variants"]["matrix-0.50"]
    assert dense["accuracy"]["float"] > 0.8
    # matrix pruning by groups: the blocks' convolutions and shortcuts keep the same channels, as the adds need
    groups = json.loads((run / "matrix-0.50" / "channel_groups.json").read_text())["groups"]
    joined = [g for g in groups if len(g["producers"]) > 1]
    assert len(joined) == 3 and all(len(g["kept"]) % 8 == 0 and len(g["kept"]) < g["size"] for g in joined)
    assert pruned["ratio_measured"] >= 0.5
    macs = [json.loads((run / v / "rtl" / "accelerator.json").read_text())["cycles_analytic"]["macs"]
            for v in ("dense", "matrix-0.50")]
    cycles = [summary["variants"][v]["cycles"]["analytic"] for v in ("dense", "matrix-0.50")]
    assert cycles[1] / cycles[0] <= macs[1] / macs[0], (cycles, macs)
    stem = [json.loads((run / v / "rtl" / "accelerator.json").read_text())["ops"][0] for v in ("dense", "matrix-0.50")]
    assert [(op["rows"], op["row_tiles"]) for op in stem] == [(27, 4), (24, 3)], stem
