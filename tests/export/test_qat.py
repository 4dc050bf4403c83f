"""Quantization-aware fine-tuning trains the contract's own arithmetic, keeps pruned weights at zero, and runs as a
variant of the flow (``quant = "qat"``) whose contract holds weights of the variant's width."""

import numpy as np
import pytest

from prunehw.core.config import LayerSpec as L, NetworkConfig
from prunehw.export.contract import Contract
from prunehw.export.golden import golden
from prunehw.export.qat import _forward, qat_finetune
from prunehw.export.quantize import quantize
from prunehw.model.network import build_model
from prunehw.model.train import fit

NET = NetworkConfig(layers=(L(type="conv2d", filters=4, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                            L(type="conv2d", filters=6, kernel=3, padding="same"), L(type="avgpool2d", pool=2),
                            L(type="flatten"), L(type="dense", units=16), L(type="relu"), L(type="dense", units=10)))


@pytest.fixture(scope="module")
def trained(tiny_data):
    model = build_model(NET, (28, 28, 1), 10, seed=5)
    fit(model, tiny_data, 1, 64, 3e-3, desc="qat test")
    return model


@pytest.mark.parametrize("weight_bits, act_bits", [(8, 8), (4, 8), (4, 4),
                                                   ({"conv1": 6, "conv2": 3, "dense1": 2, "dense2": 5}, 5)],
                         ids=["w8a8", "w4a8", "w4a4", "per-layer"])
def test_forward_is_the_contracts_arithmetic(trained, tiny_data, weight_bits, act_bits):
    """The fine-tuning's forward pass, on the formats ``quantize`` chooses, gives the golden model's integer logits
    exactly (every value on its grid, float32 sums exact at these sizes): it trains what the hardware computes."""
    import tensorflow as tf

    from prunehw.model.data import to_float

    calib, x = tiny_data.x_train[:64], tiny_data.x_test[:16]
    spec, w, b = quantize(trained, calib, weight_bits, act_bits)
    contract = Contract(spec, w, b)
    assert [l["weight"]["bits"] for l in contract.weighted()] == list(
        weight_bits.values() if isinstance(weight_bits, dict) else [weight_bits] * 4)
    formats = {l["name"]: l for l in spec["layers"] if l["type"] in ("conv2d", "dense")}
    masks = {n: tf.ones_like(trained.get_layer(n).kernel) for n in formats}
    y = _forward(trained, formats, masks, tf.constant(to_float(x))).numpy()
    frac = contract.weighted()[-1]["accum"]["frac"]
    np.testing.assert_array_equal(np.rint(y * 2.0 ** frac).astype(np.int64), golden(contract, x))


def test_finetuning_keeps_pruned_weights_zero_and_helps_at_four_bits(trained, tiny_data):
    """At 4-bit weights and activations, a short fine-tuning through the contract's arithmetic gives a golden
    integer model at least as accurate as post-training quantization of the same weights; zeros stay zero."""
    import keras

    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    k = model.layers[0].kernel.numpy()
    k[0, 0, 0, :2] = 0.0                               # two weights pruned
    model.layers[0].kernel.assign(k)
    calib = tiny_data.x_train[:128]

    def accuracy():
        c = Contract(*quantize(model, calib, 4, 4))
        return float(np.mean(golden(c, tiny_data.x_test).argmax(axis=1) == tiny_data.y_test))

    before = accuracy()
    history = qat_finetune(model, tiny_data.x_train, tiny_data.y_train, calib, 4, 4, 2, 64, 3e-4, seed=1)
    after = accuracy()
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    assert np.all(model.layers[0].kernel.numpy()[0, 0, 0, :2] == 0.0)
    assert after >= before - 0.01, (before, after)


def test_qat_variant_through_the_flow(quick_flow):
    """A variant ``matrix-0.80-w4-qat``: pruned, fine-tuned through the contract at 4-bit weights, quantized; its
    contract's weights are 4-bit, summary.json says how (quant, widths per layer), hls4ml agrees bit for bit."""
    import json

    from prunehw.core.config import VariantConfig

    variant = VariantConfig(method="matrix", ratio=0.8, quant="qat", weight_bits=4, qat_epochs=1)
    assert variant.name == "matrix-0.80-w4-qat"
    flow = quick_flow.with_variant(variant)
    contract_path = flow.quantize(variant.name)
    flow.export(variant.name)
    contract = json.loads(contract_path.read_text())
    assert all(l["weight"]["bits"] == 4 for l in contract["layers"] if l["type"] in ("conv2d", "dense"))
    entry = json.loads((flow.run_dir / "summary.json").read_text())["variants"][variant.name]
    assert (entry["quant"], entry["weight_bits"], entry["act_bits"]) == ("qat", 4, 8)
    assert entry["bits"] == {l["name"]: {"weight": 4, "act": l["output"]["bits"]}
                             for l in contract["layers"] if l["type"] in ("conv2d", "dense")}
    hls = entry["bitexact"]["hls"]
    assert hls["match"] == hls["total"] > 0
    assert (contract_path.parent / "model_qat.keras").is_file()
    # it differs from matrix-0.80 only in its quantization: it took that variant's pruned model, not pruned again
    assert entry["pruned_as"] == "matrix-0.80" and entry["weights_kept"] == \
        json.loads((flow.run_dir / "summary.json").read_text())["variants"]["matrix-0.80"]["weights_kept"]


def test_bit_allocation_variant_through_the_flow(quick_flow):
    """``weight_bits = "auto"``: the widths searched per layer land in the contract (one weight ROM per width in
    the accelerator), the search in the summary and beside the variant, and hls4ml agrees bit for bit."""
    import json

    from prunehw.core.config import VariantConfig

    # (the quick flow's briefly trained matrix-0.80 is some points below its dense model even at 8 bits)
    variant = VariantConfig(method="matrix", ratio=0.8, weight_bits="auto", max_loss=5.0)
    flow = quick_flow.with_variant(variant)
    contract_path = flow.quantize(variant.name)
    flow.export(variant.name)
    entry = json.loads((flow.run_dir / "summary.json").read_text())["variants"][variant.name]
    alloc = entry["bit_allocation"]
    contract = json.loads(contract_path.read_text())
    assert {l["name"]: l["weight"]["bits"] for l in contract["layers"] if l["type"] in ("conv2d", "dense")} == \
        alloc["weight_bits"]
    assert alloc["met"] and alloc["val_reference_float"] - alloc["val_accuracy"] <= 0.05 + 1e-9
    assert min(alloc["weight_bits"].values()) < 8, "the search narrowed nothing"
    assert entry["weight_bits"] == max(alloc["weight_bits"].values())
    assert (contract_path.parent / "bit_allocation.csv").is_file() and (contract_path.parent / "bit_allocation.png").is_file()
    hls = entry["bitexact"]["hls"]
    assert hls["match"] == hls["total"] > 0


def test_forward_is_the_contracts_arithmetic_for_averages_of_any_window(tiny_data):
    """Averages over 9 values (after a ReLU) and over a 2x3 window of signed values: the fine-tuning's forward pass
    truncates and rounds each quotient as the contract does, giving the golden model's logits exactly."""
    import tensorflow as tf

    from prunehw.model.data import to_float

    net = NetworkConfig(layers=(L(type="conv2d", filters=4, kernel=3), L(type="relu"), L(type="avgpool2d", pool=3),
                                L(type="conv2d", filters=6, kernel=3, padding="same"), L(type="avgpool2d", pool=[2, 3]),
                                L(type="flatten"), L(type="dense", units=10)))
    model = build_model(net, (28, 28, 1), 10, seed=6)
    fit(model, tiny_data, 1, 64, 3e-3, desc="qat average test")
    calib, x = tiny_data.x_train[:64], tiny_data.x_test[:32]
    spec, w, b = quantize(model, calib, 8, 8)
    contract = Contract(spec, w, b)
    formats = {l["name"]: l for l in spec["layers"] if l["type"] in ("conv2d", "dense")}
    masks = {n: tf.ones_like(model.get_layer(n).kernel) for n in formats}
    y = _forward(model, formats, masks, tf.constant(to_float(x))).numpy()
    frac = contract.weighted()[-1]["accum"]["frac"]
    np.testing.assert_array_equal(np.rint(y * 2.0 ** frac).astype(np.int64), golden(contract, x))
