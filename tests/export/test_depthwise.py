"""Depthwise convolutions (``DepthwiseConv2D``, depth multiplier 1) in the numeric contract: each channel its own
kh x kw kernel, a (kh*kw) x C matrix; quantized from Keras, the golden model equal to hls4ml's C simulation on every
image and to TensorFlow's depthwise convolution on the contract's integers; on the accelerator, grouped by column tile (each
column tile's own channels, one kernel tap a fold; or, with more columns than rows, the convolution with its
block-diagonal matrix), bit-exact with every counter equal to the analytic model.

The network is a DS-CNN-style stack on downscaled MNIST: a 3x3 convolution, a depthwise-separable block (3x3
depthwise with ReLU, 1x1 pointwise with ReLU), then a strided, padded 3x2 depthwise convolution without ReLU (signed
outputs, zeros padded), an average pooling, a dense layer.
"""

import keras
import numpy as np
import pytest
from contracts import export_to_hls4ml

from prunehw.export.golden import golden
from prunehw.export.hls import predict_ints
from prunehw.export.kinds import KINDS

SHAPE = (12, 12, 1)
IMAGES = 200


def _ds_cnn():
    L = keras.layers
    inp = keras.Input(SHAPE)
    x = L.ReLU(name="relu1")(L.Conv2D(6, 3, padding="same", name="conv1")(inp))
    x = L.ReLU(name="relu2")(L.DepthwiseConv2D(3, padding="same", name="dw1")(x))
    x = L.ReLU(name="relu3")(L.Conv2D(8, 1, name="pw1")(x))
    x = L.DepthwiseConv2D((3, 2), strides=2, padding="same", name="dw2")(x)       # (no ReLU: signed)
    x = L.Flatten(name="flatten")(L.AveragePooling2D(2, name="avg")(x))
    return keras.Model(inp, L.Dense(10, name="dense")(x))


@pytest.fixture(scope="module")
def depthwise(tmp_path_factory, tiny_data):
    """(contract, dequantized Keras model, compiled hls4ml model, its folder, test images)."""
    from prunehw.model.data import Dataset
    from prunehw.model.train import fit

    crop = lambda x: x[:, 8:20, 8:20]       # noqa: E731  (the digits' middle 12x12)
    data = Dataset(crop(tiny_data.x_train), tiny_data.y_train, crop(tiny_data.x_val), tiny_data.y_val,
                   crop(tiny_data.x_test), tiny_data.y_test, source="mnist-small", digest="-")
    keras.utils.set_random_seed(5)
    model = _ds_cnn()
    fit(model, data, 2, 64, 3e-3, desc="depthwise test")
    contract, deq, hmodel, project = export_to_hls4ml(model, data.x_train[:256], tmp_path_factory.mktemp("dw"))
    return contract, deq, hmodel, project, data.x_test[:IMAGES]


def test_the_contract_holds_each_channel_s_taps_as_a_column(depthwise):
    contract, deq, *_ = depthwise
    by_name = {l["name"]: l for l in contract.layers}
    dw1, dw2 = by_name["dw1"], by_name["dw2"]
    assert (dw1["type"], dw1["rows"], dw1["in_channels"], dw1["out_channels"]) == ("depthwise2d", 9, 6, 6)
    assert (dw2["kernel"], dw2["stride"], dw2["padding"], dw2["rows"]) == ([3, 2], 2, "same", 6)
    assert dw1["output"]["relu"] and not dw2["output"]["relu"] and dw2["output"]["signed"]
    assert contract.weights["dw2"].shape == (6, 8)
    kernel = deq.get_layer("dw2").kernel.numpy()                       # (3, 2, 8, 1)
    frac = dw2["weight"]["frac"]
    assert np.array_equal(kernel[..., 0].reshape(6, 8) * 2.0 ** frac, contract.weights["dw2"])


def test_golden_equals_hls4ml_csim_on_every_image(depthwise):
    contract, _, hmodel, project, x = depthwise
    want, got = golden(contract, x), predict_ints(hmodel, project, contract, x, workers=1)
    mismatched = int(np.sum(np.any(want != got, axis=1)))
    assert mismatched == 0, f"{mismatched}/{len(x)} images differ between golden and hls4ml"


def test_golden_follows_the_float_model(depthwise):
    contract, deq, _, _, x = depthwise
    want = np.asarray(deq(x.astype(np.float32)[..., None] / 256.0)).argmax(axis=1)
    assert np.mean(golden(contract, x).argmax(axis=1) == want) >= 0.9


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, "same"), ((3, 2), 2, "same"), ((2, 3), 1, "valid")])
def test_the_depthwise_accumulators_equal_tensorflow_s_on_integers(kernel, stride, padding, rng):
    import tensorflow as tf

    from prunehw.core.geometry import kernel_size
    from prunehw.export.contract import Contract

    kh, kw = kernel_size(kernel)
    c = 5
    layer = {"name": "dw", "type": "depthwise2d", "kernel": kernel if isinstance(kernel, int) else list(kernel),
             "stride": stride, "padding": padding, "rows": kh * kw, "in_channels": c, "out_channels": c}
    w, b = rng.integers(-128, 128, (kh * kw, c)), rng.integers(-999, 999, c)
    a = rng.integers(-128, 128, (3, 7, 8, c))
    got = KINDS["depthwise2d"].accumulate(layer, a, Contract({"layers": []}, {"dw": w}, {"dw": b}))
    want = tf.nn.depthwise_conv2d(a.astype(np.float64), w.reshape(kh, kw, c, 1).astype(np.float64),
                                  (1, stride, stride, 1), padding.upper()).numpy() + b
    assert np.array_equal(got, want.astype(np.int64))


def test_a_depthwise_entry_that_does_not_add_up_is_refused_in_one_line(depthwise):
    from prunehw.core.errors import ModelFileError
    from prunehw.export.contract import _check

    contract, *_ = depthwise
    for change, message in (({"rows": 54}, "layer 'dw1' has 54 rows; its kernel's 9 taps (one column per channel) are 9"),
                            ({"out_channels": 12}, "(depthwise) has 6 input and 12 output channels; allowed: the same")):
        spec = {**contract.spec, "layers": [{**l, **change} if l["name"] == "dw1" else l for l in contract.layers]}
        with pytest.raises(ModelFileError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            _check(spec, "c.json")
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("rows, cols", [(4, 4), (8, 8), (4, 8)])
def test_the_accelerator_computes_it_grouped_by_column_tile(depthwise, rows, cols):
    """On an array with at least as many rows as columns a depthwise convolution is grouped: column tile ct computes
    its own C channels, and its row tile t holds tap t of exactly those channels on the diagonal, so the layer takes
    kh*kw folds per column tile, each doing C useful products. With more columns than rows it is the convolution
    with its block-diagonal matrix (zeros gated). Either way the generated design (Amaranth's simulator) gives the
    golden logits, and its cycles and every counter equal the analytic model's."""
    from amaranth_run import run_images

    from prunehw.core.config import ArrayConfig
    from prunehw.hw.compile.program import build_program
    from prunehw.hw.gateware.accelerator import COUNTERS
    from prunehw.hw.models.cycle_model import activity_model, cycle_model

    contract, *_, x = depthwise
    program = build_program(contract, ArrayConfig(rows=rows, cols=cols))
    dw1 = next(op for op in program.ops if op.name == "dw1")
    w = contract.weights["dw1"]
    n_ct = -(-6 // cols)
    if cols <= rows:
        assert dw1.grouped and (dw1.n_ct, dw1.n_rt, len(dw1.row_table)) == (n_ct, 9, 9 * n_ct)
        for ct in range(n_ct):          # tile (ct, t): tap t of channels ct*C.., on the diagonal, read in one word
            chans = list(range(ct * cols, min(6, ct * cols + cols)))
            for t in range(9):
                tile, row = dw1.tiles[ct * 9 + t], dw1.row_table[dw1.row_tile(ct, t)]
                assert np.array_equal(np.diag(tile)[:len(chans)], w[t, chans]) and np.count_nonzero(tile - np.diag(np.diag(tile))) == 0
                assert [lane for _, lane, v in row if v] == [c % cols for c in chans]
                assert len({off for off, _, v in row if v}) == 1
        assert sum(dw1.macs_per_fold) == 9 * 6, "a fold's useful products are its diagonal"
    else:
        assert not dw1.grouped and dw1.kind == "conv2d" and dw1.rows == 9 * 6
        assert np.array_equal(KINDS["depthwise2d"].full_matrix(w)[[t * 6 + c for t in range(9) for c in range(6)]]
                              .reshape(9, 6, 6)[:, range(6), range(6)], w)
    model, activity = cycle_model(program), activity_model(program)
    want = golden(contract, x[:2])
    for (logits, counters), g in zip(run_images(program, x[:2]), want):
        assert list(logits) == list(g)
        assert counters["total_cycles"] == model.total and {k: counters[k] for k in COUNTERS} == activity


def test_the_stimulus_search_s_interval_bounds_hold_through_depthwise_layers(depthwise):
    """The mutation campaign's proofs of unreachability bound every accumulator from the pixels' range: through a
    depthwise layer (each channel reading only itself) the bounds must still hold on every image, and be exact for
    the first layer."""
    from prunehw.export.golden import accumulate, apply_layer
    from prunehw.sim.stimulus import _accumulator_bounds

    contract, *_, x = depthwise
    bounds, _ = _accumulator_bounds(contract)
    a = (x if x.ndim == 4 else x[..., None]).astype(np.int64)
    for layer in contract.layers:
        if layer["name"] in bounds:
            acc = accumulate(layer, a, contract).reshape(-1, layer["out_channels"])
            lo, hi = bounds[layer["name"]]
            assert np.all(acc >= lo) and np.all(acc <= hi), layer["name"]
        a = apply_layer(layer, a, contract)
