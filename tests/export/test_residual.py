"""A residual ``Add`` in the numeric contract: quantized from a functional Keras model as it is (no chain), its two
inputs aligned to the finer format and summed exactly, then requantized (its ReLU fused, round half up, saturate);
the golden model equal to hls4ml's C simulation on every image; on the accelerator, added at the write-back of the
convolution that ends a branch, the other input kept in a third activation buffer.

Two small residual networks, trained briefly on downscaled MNIST: an identity shortcut (the block's input, after
its ReLU, added to a conv without ReLU, then a ReLU), and a ResNet-style downsampling block (a 3x3 stride-2
convolution beside a 1x1 stride-2 shortcut convolution, neither with a ReLU, added without a ReLU after: a signed
sum, rounded and saturated by the add itself, read by the next convolution, whose 3x3 average pooling divides by
9).
"""

import keras
import numpy as np
import pytest
from contracts import export_to_hls4ml

from prunehw.export.contract import output_range
from prunehw.export.golden import golden
from prunehw.export.hls import predict_ints
from prunehw.export.kinds import KINDS

SHAPE = (12, 12, 1)
IMAGES = 200


def _identity_block():
    L = keras.layers
    inp = keras.Input(SHAPE)
    x = L.ReLU(name="relu1")(L.Conv2D(4, 3, padding="same", name="conv1")(inp))
    y = L.ReLU(name="relu2")(L.Conv2D(4, 3, padding="same", name="conv2")(x))
    y = L.Conv2D(4, 3, padding="same", name="conv3")(y)
    z = L.ReLU(name="relu3")(L.Add(name="add")([y, x]))
    z = L.Flatten(name="flatten")(L.MaxPooling2D(2, name="pool")(z))
    return keras.Model(inp, L.Dense(10, name="dense")(z))


def _downsampling_block():
    L = keras.layers
    inp = keras.Input(SHAPE)
    x = L.ReLU(name="relu1")(L.Conv2D(4, 3, padding="same", name="conv1")(inp))
    y = L.Conv2D(6, 3, strides=2, padding="same", name="conv2")(x)
    s = L.Conv2D(6, 1, strides=2, name="shortcut")(x)
    z = L.Add(name="add")([y, s])                         # (no ReLU: a signed sum)
    z = L.ReLU(name="relu3")(L.Conv2D(4, 3, name="conv3")(z))
    # (a 3x3 average: a division by 9, registered before it, in a design whose bottom also has the add stages)
    z = L.AveragePooling2D(3, name="pool")(z)
    return keras.Model(inp, L.Dense(10, name="dense")(L.Flatten(name="flatten")(z)))


CASES = {"identity": _identity_block, "downsampling": _downsampling_block}


def _images(x: np.ndarray) -> np.ndarray:
    return x[:, 8:20, 8:20]          # (the digits' middle 12x12)


@pytest.fixture(scope="module", params=list(CASES))
def residual(request, tmp_path_factory, tiny_data):
    """(case, contract, dequantized Keras model, compiled hls4ml model, its folder, test images)."""
    from prunehw.model.data import Dataset
    from prunehw.model.train import fit

    data = Dataset(_images(tiny_data.x_train), tiny_data.y_train, _images(tiny_data.x_val), tiny_data.y_val,
                   _images(tiny_data.x_test), tiny_data.y_test, source="mnist-small", digest="-")
    keras.utils.set_random_seed(3)
    model = CASES[request.param]()
    fit(model, data, 2, 64, 3e-3, desc="residual test")
    contract, deq, hmodel, project = export_to_hls4ml(model, data.x_train[:256], tmp_path_factory.mktemp(request.param))
    return request.param, contract, deq, hmodel, project, data.x_test[:IMAGES]


def test_the_contract_holds_the_add_with_both_inputs_and_their_formats(residual):
    case, contract, *_ = residual
    add = next(l for l in contract.layers if l["type"] == "add")
    by_name = {l["name"]: l for l in contract.layers}
    if case == "identity":
        # the block's input is conv1's output (its ReLU fused), the add's ReLU is fused into the add
        assert add["inputs"] == ["conv3", "conv1"] and add["output"]["relu"] and add["output"]["name"] == "relu3"
        assert not add["output"]["signed"]
    else:
        assert add["inputs"] == ["conv2", "shortcut"] and not add["output"]["relu"] and add["output"]["signed"]
        assert by_name["conv3"]["inputs"] == ["add"] and by_name["conv3"]["input"] == {
            k: add["output"][k] for k in ("bits", "frac", "signed")}
    assert add["input"] == [{k: by_name[n]["output"][k] for k in ("bits", "frac", "signed")} for n in add["inputs"]]
    assert add["shape"] == by_name[add["inputs"][0]]["shape"] == by_name[add["inputs"][1]]["shape"]
    assert not contract.graph.is_chain


def test_golden_equals_hls4ml_csim_on_every_image(residual):
    case, contract, _, hmodel, project, x = residual
    want = golden(contract, x)
    got = predict_ints(hmodel, project, contract, x, workers=1)
    mismatched = int(np.sum(np.any(want != got, axis=1)))
    assert mismatched == 0, f"{case}: {mismatched}/{len(x)} images differ between golden and hls4ml"


def test_golden_follows_the_float_model(residual):
    """The integers are the float network's, quantized: the logits' argmax agrees on nearly every image."""
    case, contract, deq, _, _, x = residual
    want = np.asarray(deq(x.astype(np.float32)[..., None] / 256.0)).argmax(axis=1)
    assert np.mean(golden(contract, x).argmax(axis=1) == want) >= 0.9, case


def test_the_add_aligns_rounds_and_saturates_as_the_contract_says():
    """By hand: a (frac 5, signed) plus b (frac 7, unsigned) at frac 7, to a signed 8-bit output at frac 4 (round
    half up, ties toward +inf, then saturate); the same with a fused ReLU (unsigned output)."""
    add = KINDS["add"]
    layer = {"name": "add", "type": "add", "inputs": ["a", "b"],
             "input": [{"bits": 8, "frac": 5, "signed": True}, {"bits": 8, "frac": 7, "signed": False}],
             "output": {"bits": 8, "frac": 4, "signed": True, "relu": False}}
    a = np.array([[3, -128, 127, -5, 0]])
    b = np.array([[4, 0, 255, 6, 8]])
    # a * 4 + b at frac 7 = [16, -512, 763, -14, 8]; / 8 rounded half up = [2, -64, 95.375 -> 95, -1.75 -> -2, 1]
    assert add.evaluate(layer, [a, b], None).tolist() == [[2, -64, 95, -2, 1]]
    small = {**layer, "output": {"bits": 5, "frac": 4, "signed": True, "relu": False}}
    assert add.evaluate(small, [a, b], None).tolist() == [[2, -16, 15, -2, 1]]     # saturated to [-16, 15]
    relu = {**layer, "output": {"bits": 8, "frac": 4, "signed": False, "relu": True}}
    assert add.evaluate(relu, [a, b], None).tolist() == [[2, 0, 95, 0, 1]]
    assert output_range(relu["output"]) == (0, 255)


@pytest.mark.parametrize("rows, cols", [(4, 4), (8, 8)])
def test_the_accelerator_adds_at_the_write_back(residual, rows, cols):
    """On the accelerator the add is fused into the write-back of the convolution just before it, its other input
    kept in a third activation buffer while the branch is computed: the generated design (Amaranth's simulator)
    gives the golden logits, and its cycles and every counter equal the analytic model's."""
    from amaranth_run import run_images

    from prunehw.core.config import ArrayConfig
    from prunehw.hw.compile.program import build_program
    from prunehw.hw.gateware.accelerator import COUNTERS
    from prunehw.hw.models.cycle_model import activity_model, cycle_model, divides

    case, contract, *_, x = residual
    program = build_program(contract, ArrayConfig(rows=rows, cols=cols))
    assert divides(program) == (case == "downsampling")       # (its average by 9 is fused into conv3)
    assert case == "identity" or next(op for op in program.matmuls() if op.name == "conv3").pool_avg
    fused = [op for op in program.matmuls() if op.add]
    assert [op.name for op in fused] == (["conv3"] if case == "identity" else ["shortcut"])
    op = fused[0]
    assert len(program.buf_depth) == 4 and 3 in (op.out_buf, op.short_buf, op.in_buf)
    assert len({op.in_buf, op.out_buf, op.short_buf}) == 3
    model, activity = cycle_model(program), activity_model(program)
    want = golden(contract, x[:2])
    for (logits, counters), g in zip(run_images(program, x[:2]), want):
        assert list(logits) == list(g)
        assert counters["total_cycles"] == model.total and {k: counters[k] for k in COUNTERS} == activity


def test_quantization_aware_fine_tuning_follows_the_add(residual, tiny_data):
    """QAT's forward pass on a residual network is the contract's arithmetic along the graph (the add's two inputs
    summed on their grids, requantized as its entry says): on the formats the contract was written with, it gives
    the golden model's integer logits exactly. A short fine-tuning of a fresh block runs and keeps zeros zero."""
    import keras
    import tensorflow as tf

    from prunehw.export.qat import _forward, qat_finetune
    from prunehw.model.data import to_float

    case, contract, deq, *_, x = residual
    formats = {l["name"]: l for l in contract.layers if l["type"] in ("conv2d", "dense", "add")}
    masks = {l["name"]: tf.ones_like(deq.get_layer(l["name"]).kernel) for l in contract.weighted()}
    y = _forward(deq, formats, masks, tf.constant(to_float(x[:32]))).numpy()
    frac = contract.weighted()[-1]["accum"]["frac"]
    np.testing.assert_array_equal(np.rint(y * 2.0 ** frac).astype(np.int64), golden(contract, x[:32]), err_msg=case)
    keras.utils.set_random_seed(0)
    model = CASES[case]()
    k = model.get_layer("conv1").kernel.numpy()
    k[0, 0, 0, :2] = 0.0
    model.get_layer("conv1").kernel.assign(k)
    xt = _images(tiny_data.x_train[:128])
    history = qat_finetune(model, xt, tiny_data.y_train[:128], xt[:64], 4, 8, 1, 32, 1e-3, seed=0)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert not model.get_layer("conv1").kernel.numpy()[0, 0, 0, :2].any()


def test_the_stimulus_search_follows_the_graph_through_the_add(residual):
    """The mutation campaign on a residual network: the interval bounds that prove events unreachable hold on
    every image through the add (the layer after it reads the add's sum, not the layer before it in the list),
    the search's float mirror and its closeness measure walk the graph, and an event called unreachable never
    happens, whatever the image."""
    from prunehw.export.golden import accumulate, layer_events, layer_input
    from prunehw.sim.stimulus import _accumulator_bounds, _mirror, choose_stimulus

    case, contract, *_, x = residual
    rng = np.random.default_rng(0)
    wild = np.concatenate([x[..., None] if x.ndim == 3 else x, rng.integers(0, 256, (200, *SHAPE)).astype(np.uint8),
                           np.full((1, *SHAPE), 255, np.uint8)])
    bounds, _ = _accumulator_bounds(contract)
    add = next(i for i, l in enumerate(contract.layers) if l["type"] == "add")
    after = next(l for l in contract.layers[add:] if l in contract.weighted())       # (it reads the sum)
    for layer in contract.weighted():
        acc = accumulate(layer, layer_input(contract, wild, layer["name"]), contract).reshape(-1, layer["out_channels"])
        lo, hi = bounds[layer["name"]]
        assert (acc >= lo).all() and (acc <= hi).all(), (case, layer["name"])
    # the mirror's accumulator is the golden one's, unrounded: within a few steps of the contract's grid
    target = f"{after['name']}:saturation"
    real = _mirror(contract, target)(wild[:20].astype(np.float32) / 256.0).numpy()
    exact = accumulate(after, layer_input(contract, wild[:20], after["name"]), contract).reshape(20, -1).max(axis=1)
    step = 2.0 ** -after["accum"]["frac"]
    assert np.allclose(real, exact * step, atol=0.05 * np.abs(exact * step).max()), (case, real, exact * step)
    images, rows = choose_stimulus(contract, x, 4, pool=len(x))
    hit = layer_events(contract, wild)
    for r in rows:
        assert r["status"] in ("reached", "unreachable", "undecided"), r
        if r["status"] == "unreachable":
            assert not hit[r["event"]].any(), (case, r)
