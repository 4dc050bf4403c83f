"""A user's own Keras model (fused ReLUs, Dropout, a final softmax) through the whole flow: imported in place of
training, pruned, quantized, hls4ml and Verilator bit-exact with the golden model."""

import keras
import numpy as np
import pytest
from cli_helpers import need_tool

from prunehw.core.config import VariantConfig, load_config
from prunehw.sim.runner import simulator_missing

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.regression
def test_user_keras_model_runs_the_whole_flow(tmp_path, tiny_data):
    need_tool(simulator_missing("verilator"))
    L = keras.layers
    keras.utils.set_random_seed(3)
    user = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(8, 5, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                             L.Dropout(0.2), L.Dense(32, activation="relu"), L.Dense(10, activation="softmax")])
    user.compile("adam", "sparse_categorical_crossentropy")
    user.fit(tiny_data.x_train.astype("float32") / 256.0, tiny_data.y_train, epochs=2, batch_size=64, verbose=0)
    path = tmp_path / "user.keras"
    user.save(path)

    from prunehw.flow import Flow

    cfg = load_config(ROOT / "configs" / "quick.toml")
    cfg = cfg.replace(build_dir=str(tmp_path / "build"), model=str(path),
                      variants=(VariantConfig(method="matrix", ratio=0.5, schedule="iterative", criterion="l1"),))
    lines: list[str] = []
    flow = Flow(cfg, log=lines.append)
    flow.train()
    summary = __import__("json").loads((flow.run_dir / "summary.json").read_text())
    rewrites = summary["train"]["rewrites"]
    assert any("softmax dropped" in r for r in rewrites) and sum("relu split" in r for r in rewrites) == 2
    assert any("Dropout dropped" in r for r in rewrites)
    assert summary["variants"]["dense"]["accuracy"]["float"] > 0.8
    variants = ["dense", "matrix-0.50"]
    flow.prune(cfg.variants[0])
    removed = __import__("json").loads((flow.run_dir / "summary.json").read_text())["variants"]["matrix-0.50"]["ratio_measured"]
    said = [l for l in lines if "asked to remove 0.50" in l]
    assert bool(said) == (abs(removed - 0.5) > 0.01), (removed, said)   # tile rounding is said when it matters
    for v in variants:
        flow.export(v)
        flow.rtl(v)
    res = flow.sim(variants, "verilator", 20, workers=2)
    summary = __import__("json").loads((flow.run_dir / "summary.json").read_text())["variants"]
    for v in variants:
        assert (res[v]["match"], res[v]["total"]) == (20, 20), res[v]["first_mismatch"]
        hls = summary[v]["bitexact"]["hls"]
        assert hls["match"] == hls["total"] == cfg.quant.hls_images, hls
        assert summary[v]["cycles"]["rtl_equals_analytic"] and summary[v]["activity_equals_analytic"]
