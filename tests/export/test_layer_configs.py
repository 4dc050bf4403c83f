"""Layer configurations (conv strides and ``same`` padding, max and average pooling), from the config to hls4ml
and the RTL: bit-exact at every step.

Per configuration (kernel, padding, stride, ReLU or not, the poolings after the conv, input): a tiny network built
from the config's layers, trained briefly on downscaled MNIST, quantized to the contract; then the golden model's
logits must equal

- hls4ml's C simulation (one compile per configuration, shared by its tests),
- the generated accelerator on a 4x4 and an 8x8 array (Amaranth's simulator; cycles and counters equal to the
  analytic model), and
- Keras' own layers run on the contract's integers (requantized between layers as the contract says, an average
  rounded half up), which checks the golden model's padding, strides and pooling windows against Keras'
  independently of hls4ml;

so the golden accuracy equals the quantized Keras model's. Average pooling on signed activations (a conv without
ReLU before it) is checked value by value in hls4ml's trace too, negative ties (-2.5 -> -2) included. A user's Keras
model with same padding, strides and batch normalization goes the same way (normalized, quantized, golden ==
hls4ml).
"""

import math

import keras
import numpy as np
import pytest
from contracts import export_to_hls4ml

from prunehw.core.config import LayerSpec as L, NetworkConfig
from prunehw.core.geometry import conv_geometry, kernel_size
from prunehw.export.golden import golden, requantize
from prunehw.export.hls import predict_ints
from prunehw.export.quantize import quantize
from prunehw.model.network import build_model

MAX2, AVG2, AVG4 = ("maxpool2d", 2), ("avgpool2d", 2), ("avgpool2d", 4)
# name: (input shape, kernel, padding, stride, relu after the conv (or "relu6"), the poolings after it)
CASES = {
    "k3-same-s1-12x12x3": ((12, 12, 3), 3, "same", 1, True, (MAX2,)),
    "k5-same-s1-9x9x1": ((9, 9, 1), 5, "same", 1, False, (MAX2,)),     # no ReLU: signed activations padded
    "k3-valid-s2-9x9x1": ((9, 9, 1), 3, "valid", 2, True, ()),
    "k3-same-s2-12x12x3": ((12, 12, 3), 3, "same", 2, True, (MAX2,)),   # 12 -> 6: one zero row, at the bottom
    "k2-same-s2-9x9x1": ((9, 9, 1), 2, "same", 2, True, ()),     # 9 -> 5: one zero row, at the bottom
    "k3-same-s1-12x12x3-avg2": ((12, 12, 3), 3, "same", 1, True, (AVG2,)),
    "k3-valid-s1-9x9x1-avg2-signed": ((9, 9, 1), 3, "valid", 1, False, (AVG2,)),   # 7 -> 3: the last row/column dropped
    "k3-same-s1-12x12x3-avg4": ((12, 12, 3), 3, "same", 1, True, (AVG4,)),         # a 16-value window: shift by 4
    "k3-same-s1-9x9x1-max2-avg2-signed": ((9, 9, 1), 3, "same", 1, False, (MAX2, AVG2)),   # 9 -> 4 -> 2
    "k3-same-s1-12x12x3-relu6": ((12, 12, 3), 3, "same", 1, "relu6", (MAX2,)),   # ReLU(max_value=6): a cap below 8
    "k3x2-same-s1-12x12x3": ((12, 12, 3), (3, 2), "same", 1, True, (MAX2,)),   # non-square: one zero column, at the right
    "k4x2-same-s2-9x9x1": ((9, 9, 1), (4, 2), "same", 2, True, ()),   # 9 -> 5 x 5: rows padded 1 on top, 2 below
    # strides of their own down and across (sh != sw): a padded walk steps its input row by sh
    "k3-same-s2x1-12x12x3": ((12, 12, 3), 3, "same", [2, 1], True, (MAX2,)),     # 12 -> 6 x 12 -> 3 x 6
    "k4x2-valid-s1x2-9x9x1": ((9, 9, 1), (4, 2), "valid", [1, 2], True, ()),     # 9 -> 6 x 4
    # an average of 9 values (its quotient truncated: a constant division on the accelerator), a non-square
    # maximum, a non-square average of 6 signed values (negative quotients truncated toward zero, then rounded
    # half up), a 2x3 average as a pass of its own
    "k3-valid-s1-12x12x3-avg3": ((12, 12, 3), 3, "valid", 1, True, (("avgpool2d", 3),)),     # 10 -> 3
    "k3-same-s1-9x9x1-avg3-signed": ((9, 9, 1), 3, "same", 1, False, (("avgpool2d", 3),)),   # negative quotients
    "k3-same-s1-12x12x3-max2-avg3": ((12, 12, 3), 3, "same", 1, True, (MAX2, ("avgpool2d", 3))),   # a pass of its own
    "k3-same-s2-12x12x3-max3x2-avg2x3": ((12, 12, 3), 3, "same", 2, True, (("maxpool2d", (3, 2)), ("avgpool2d", (2, 3)))),
    "k3-same-s1-12x12x3-max2x3": ((12, 12, 3), 3, "same", 1, True, (("maxpool2d", (2, 3)),)),   # 12 -> 6 x 4
    "k3-same-s1-9x9x1-avg3x2-signed": ((9, 9, 1), 3, "same", 1, False, (("avgpool2d", (3, 2)),)),   # 9 -> 3 x 4
}

#: the relu6 case's conv weights are scaled up after training, so that its activations pass the cap
RELU6_GAIN = 12.0
IMAGES = 48


def _images(x: np.ndarray, shape: tuple) -> np.ndarray:
    """MNIST digits cut down to ``shape`` (every third pixel for 9x9, every other of the centre for 12x12); three
    channels: the digit, the digit shifted by a pixel, its negative."""
    small = x[:, 1:27:3, 1:27:3, 0] if shape[0] == 9 else x[:, 2:26:2, 2:26:2, 0]
    if shape[2] == 1:
        return small[..., None]
    return np.stack([small, np.roll(small, 1, axis=2), 255 - small], axis=-1)


def _network(shape, kernel, padding, stride, relu, pools) -> NetworkConfig:
    layers = [L(type="conv2d", filters=6, kernel=kernel, padding=padding, stride=stride)]
    layers += [L(type=relu if isinstance(relu, str) else "relu")] if relu else []
    layers += [L(type=kind, pool=p) for kind, p in pools]
    return NetworkConfig(layers=(*layers, L(type="flatten"), L(type="dense", units=10)))


def _keras_integer_logits(model: keras.Model, contract, x_uint8: np.ndarray) -> np.ndarray:
    """The contract executed with Keras' layers doing the convolutions, pooling and flattening: every value handed
    to a layer is a contract integer times its 2**-frac (exact in float32), every conv/dense result is taken back
    to integers (exact while the accumulator fits float32's 24-bit mantissa, which is checked) and requantized,
    every average (exact in float32: a power-of-two division of a small sum) rounded half up to the input's LSB."""
    by_name = {l.name: l for l in model.layers}
    a = x_uint8.astype(np.int64)
    frac = contract.input["frac"]
    for layer in contract.layers:
        k = by_name[layer["name"]]
        y = np.asarray(k(a.astype(np.float64) * 2.0 ** -frac)).astype(np.float64)
        if layer["type"] in ("conv2d", "dense"):
            assert layer["accum"]["bits"] <= 24, "float32 would not hold the accumulator exactly"
            acc = y * 2.0 ** layer["accum"]["frac"]
            assert np.array_equal(acc, np.rint(acc))
            a, out = np.rint(acc).astype(np.int64), layer["output"]
            if (out["bits"], out["frac"], out["relu"]) != (layer["accum"]["bits"], layer["accum"]["frac"], False):
                a = requantize(a, layer["accum"]["frac"], out)     # (the logits stay at accumulator precision)
            frac = out["frac"]
        elif layer["type"] == "avgpool2d":
            n = int(np.prod(kernel_size(layer["pool"])))
            total = y * 2.0 ** frac * n      # (the window's integer sum)
            assert np.allclose(total, np.rint(total), rtol=0, atol=1e-3)
            # the contract's average: the quotient truncated toward zero at E = ceil(log2 n) more fractional bits,
            # then rounded half up (the real average rounded half up, where it is not negative)
            e = math.ceil(math.log2(n))
            q = np.sign(total) * np.floor(np.abs(np.rint(total)) * 2.0 ** e / n)
            a = np.floor((q + 2.0 ** (e - 1)) / 2.0 ** e).astype(np.int64)
        else:
            a = np.rint(y * 2.0 ** frac).astype(np.int64)
    return a


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory, tiny_data):
    """(case, contract, dequantized Keras model, compiled hls4ml model, its folder, test images, labels)."""
    from prunehw.model.data import Dataset
    from prunehw.model.train import fit

    shape, kernel, padding, stride, relu, pools = CASES[request.param]
    data = Dataset(_images(tiny_data.x_train, shape), tiny_data.y_train, _images(tiny_data.x_val, shape), tiny_data.y_val,
                   _images(tiny_data.x_test, shape), tiny_data.y_test, source="mnist-small", digest="-")
    model = build_model(_network(shape, kernel, padding, stride, relu, pools), shape, 10, seed=7)
    fit(model, data, 2, 64, 3e-3, desc="conv geometry test")
    if relu == "relu6":
        conv = model.layers[0]
        conv.kernel.assign(conv.kernel * RELU6_GAIN)
        conv.bias.assign(conv.bias * RELU6_GAIN)
    contract, deq, hmodel, project = export_to_hls4ml(model, data.x_train[:256], tmp_path_factory.mktemp(request.param))
    return request.param, contract, deq, hmodel, project, data.x_test[:IMAGES], data.y_test[:IMAGES]


def test_contract_says_stride_and_padding_only_when_not_the_defaults(exported):
    case, contract, *_ = exported
    shape, kernel, padding, stride, *_ = CASES[case]
    conv = contract.layers[0]
    assert (conv.get("stride", 1), conv.get("padding", "valid")) == (stride, padding)
    assert ("stride" in conv) == (stride != 1) and ("padding" in conv) == (padding != "valid")
    oh, ow, *_ = conv_geometry(shape[0], shape[1], kernel, stride, padding)
    assert golden(contract, exported[5][:2], return_all=True)[1][conv["name"]].shape == (2, oh, ow, 6)


def test_golden_equals_hls4ml_csim(exported):
    case, contract, _, hmodel, project, x, _ = exported
    got = predict_ints(hmodel, project, contract, x, workers=1)
    want = golden(contract, x)
    assert got.shape == want.shape == (len(x), 10)
    assert np.array_equal(got, want), f"{case}: {int((got != want).any(axis=1).sum())} of {len(x)} images differ"


@pytest.mark.parametrize("rows, cols", [(4, 4), (8, 8)])
def test_rtl_equals_golden_and_hls4ml(exported, rows, cols):
    """The same networks through the generated accelerator (Amaranth's simulator, the design that becomes the
    Verilog), on a 4x4 and an 8x8 array: logits equal the golden model's and hls4ml's, cycles and every activity
    counter equal the analytic model's."""
    from amaranth_run import run_images

    from prunehw.core.config import ArrayConfig
    from prunehw.hw.gateware.accelerator import COUNTERS
    from prunehw.hw.models.cycle_model import activity_model, cycle_model
    from prunehw.hw.compile.program import build_program

    case, contract, _, hmodel, project, x, _ = exported
    x = x[:2]
    program = build_program(contract, ArrayConfig(rows=rows, cols=cols))
    want, hls = golden(contract, x), predict_ints(hmodel, project, contract, x, workers=1)
    model, activity = cycle_model(program), activity_model(program)
    for (logits, counters), g, h in zip(run_images(program, x), want, hls):
        assert list(logits) == list(g) == list(h), case
        assert counters["total_cycles"] == model.total and {k: counters[k] for k in COUNTERS} == activity, case


def test_golden_equals_keras_on_the_contract_integers(exported):
    """Keras pads and strides its own way; the golden model's integers match it exactly, so its accuracy is the
    quantized Keras model's, and close to the float model's."""
    case, contract, deq, _, _, x, y = exported
    want = golden(contract, x)
    got = _keras_integer_logits(deq, contract, x)
    assert np.array_equal(got, want), case
    assert np.mean(want.argmax(1) == y) == np.mean(got.argmax(1) == y)
    float_acc = np.mean(np.asarray(deq(x.astype(np.float32) / 256.0)).argmax(1) == y)
    assert abs(np.mean(want.argmax(1) == y) - float_acc) <= 0.1, case


def test_relu6_caps_at_six_in_the_contract_golden_and_hls4ml(exported):
    """A relu6 is fused into its conv as a cap (``relu_max``) below the output format's largest code; the golden
    model's outputs reach the cap and never pass it, and hls4ml computes it with its own ``nnet::relu6``."""
    case, contract, _, _, project, x, _ = exported
    out = contract.layers[0]["output"]
    if CASES[case][4] != "relu6":
        assert "relu_max" not in out
        return
    cap = 6 * 2 ** out["frac"]
    assert out["relu_max"] == 6 and out["relu"] and not out["signed"] and cap < 2 ** out["bits"] - 1
    conv = golden(contract, x, return_all=True)[1][contract.layers[0]["name"]]
    assert conv.max() == cap and (conv == cap).sum() > 10, (conv.max(), cap)
    assert "nnet::relu6<" in (project / "firmware" / "prunehw.cpp").read_text()


def test_poolings_pass_the_format_through_and_set_their_hls4ml_types(exported):
    """Each pooling's input is the conv's output format (signed without a ReLU); an average's hls4ml accumulator
    holds the window's sum and its division exactly, its result rounds half up (AP_RND) in that format."""
    case, contract, _, _, project, *_ = exported
    relu, pools = CASES[case][4:]
    layers = contract.layers
    assert [(l["type"], kernel_size(l["pool"])) for l in layers if "pool" in l] == [(k, kernel_size(p)) for k, p in pools]
    conv_out = {k: layers[0]["output"][k] for k in ("bits", "frac", "signed")}
    assert conv_out["signed"] == (not relu)
    defines = (project / "firmware" / "defines.h").read_text()
    for layer in layers[1:1 + len(pools)]:
        assert layer["input"] == conv_out
        if layer["type"] == "avgpool2d":
            f, shift = layer["input"], math.ceil(math.log2(np.prod(kernel_size(layer["pool"]))))
            fixed = "ap_fixed" if f["signed"] else "ap_ufixed"
            accum = f"{fixed}<{f['bits'] + 2 * shift},{f['bits'] - f['frac'] + shift}>"
            result = f"{fixed}<{f['bits']},{f['bits'] - f['frac']},AP_RND,AP_SAT"
            assert f"typedef {accum} {layer['name']}_accum_t;" in defines, case
            assert result in defines, case


def test_user_model_with_same_padding_strides_and_batchnorm_is_bit_exact(tmp_path):
    """The brief's user model: normalized (batch norm folded, fused ReLU split, softmax dropped), quantized,
    and hls4ml's C simulation equal to the golden model on a few images."""
    from prunehw.model.network import check_supported
    from prunehw.model.user_model import normalize

    Lk = keras.layers
    keras.utils.set_random_seed(3)
    user = keras.Sequential([keras.Input((32, 32, 3)), Lk.Conv2D(8, 3, padding="same"), Lk.BatchNormalization(),
                             Lk.ReLU(), Lk.MaxPooling2D(), Lk.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
                             Lk.Flatten(), Lk.Dense(10, activation="softmax")])
    rng = np.random.default_rng(3)
    bn = user.layers[1]
    bn.set_weights([rng.uniform(0.5, 2.0, 8), rng.normal(0, 0.2, 8), rng.normal(0, 0.1, 8), rng.uniform(0.2, 1.5, 8)])
    x = rng.integers(0, 256, (72, 32, 32, 3)).astype(np.uint8)
    model, notes = normalize(user, "user.keras")
    check_supported(model, "user.keras")
    assert [(tuple(l.strides), l.padding) for l in model.layers if isinstance(l, Lk.Conv2D)] == [((1, 1), "same"), ((2, 2), "same")]
    assert tuple(model.layers[-2].output.shape[1:]) == (8 * 8 * 16,)
    contract, _, hmodel, project = export_to_hls4ml(model, x[:64], tmp_path)
    assert [(l.get("stride"), l.get("padding")) for l in contract.weighted()] == [(None, "same"), (2, "same"), (None, None)]
    got = predict_ints(hmodel, project, contract, x[64:], workers=1)
    assert np.array_equal(got, golden(contract, x[64:]))


def test_what_the_contract_cannot_say_is_refused_before_export():
    """A ReLU after pooling (the contract fuses ReLU into the layer before it), dilation, an
    average over windows that overlap: refused at quantization in one line; a Keras
    model striding or pooling otherwise than its contract: refused by the hls4ml config."""
    from prunehw.core.errors import ModelFileError
    from prunehw.export.hls import hls_config

    Lk = keras.layers
    x = np.random.default_rng(0).integers(0, 256, (4, 9, 9, 1)).astype(np.uint8)
    for layers, message in (
            ([Lk.Conv2D(2, 3, name="c"), Lk.MaxPooling2D(name="p"), Lk.ReLU(name="r")], "ReLU 'r' does not follow a Conv2D, Dense or Add"),
            ([Lk.Conv2D(2, 3, dilation_rate=2, name="c")], r"layer 'c' uses dilation_rate \(2, 2\)"),
            ([Lk.Conv2D(2, 3, name="c"), Lk.AveragePooling2D(2, strides=1, name="ap")],
             r"layer 'ap' is \(2, 2\) with strides \(1, 1\); supported: strides equal to the window")):
        model = keras.Sequential([keras.Input((9, 9, 1)), *layers, Lk.Flatten(), Lk.Dense(3)])
        with pytest.raises(ModelFileError, match=message) as err:
            quantize(model, x)
        assert "\n" not in str(err.value)
    same = keras.Sequential([keras.Input((9, 9, 1)), Lk.Conv2D(2, 3, padding="same", strides=2, name="c"), Lk.Flatten(),
                             Lk.Dense(3, name="d")])
    valid = keras.Sequential([keras.Input((9, 9, 1)), Lk.Conv2D(2, 3, strides=2, name="c"), Lk.Flatten(), Lk.Dense(3, name="d")])
    from prunehw.export.contract import Contract

    spec, w, b = quantize(same, x)
    with pytest.raises(ModelFileError, match=r"layer 'c': the Keras model has strides \(2, 2\), padding 'valid'.*"
                                             r"the contract says stride 2, padding 'same'"):
        hls_config(valid, Contract(spec, w, b))
    averaged = keras.Sequential([keras.Input((9, 9, 1)), Lk.Conv2D(2, 3, name="c"), Lk.AveragePooling2D(2, name="pl"),
                                 Lk.Flatten(), Lk.Dense(3, name="d")])
    maxed = keras.Sequential([keras.Input((9, 9, 1)), Lk.Conv2D(2, 3, name="c"), Lk.MaxPooling2D(name="pl"), Lk.Flatten(),
                              Lk.Dense(3, name="d")])
    spec, w, b = quantize(averaged, x)
    assert [l["type"] for l in spec["layers"]] == ["conv2d", "avgpool2d", "flatten", "dense"]
    with pytest.raises(ModelFileError, match=r"layer 'pl': the Keras model has MaxPooling2D \(2, 2\) with strides \(2, 2\), "
                                             r"padding 'valid'; the contract says AveragePooling2D 2, strides 2, valid"):
        hls_config(maxed, Contract(spec, w, b))


def test_kernel_larger_than_the_input_is_refused_only_for_valid_padding():
    from prunehw.core.errors import ConfigError

    layers = (L(type="conv2d", filters=2, kernel=5, padding="same"), L(type="flatten"), L(type="dense", units=3))
    model = build_model(NetworkConfig(layers=layers), (4, 4, 1), 3, seed=1)
    assert tuple(model.layers[0].output.shape[1:]) == (4, 4, 2)
    with pytest.raises(ConfigError, match=r"kernel 5x5 is larger than its 4x4 input \(valid padding\)"):
        build_model(NetworkConfig(layers=(layers[0].replace(padding="valid"), *layers[1:])), (4, 4, 1), 3, seed=1)


@pytest.mark.parametrize("exported", [c for c, (*_, relu, pools) in CASES.items() if not relu and AVG2 in pools],
                         indirect=True)
def test_signed_average_pooling_equals_golden_value_by_value_negative_ties_included(exported):
    """The poolings' own outputs in hls4ml's trace equal the golden model's, on signed inputs whose windows hold
    negative and positive ties (sum -10 over 4: -2.5 -> -2, as the hardware rounds). (Last of the module's tests
    on a configuration: tracing recompiles its shared hls4ml model.)"""
    case, contract, _, hmodel, _, x, _ = exported
    _, outs = golden(contract, x, return_all=True)
    names = [l["name"] for l in contract.layers if "pool" in l]
    before = contract.layers[contract.layers.index(next(l for l in contract.layers if l["type"] == "avgpool2d")) - 1]
    a, p = outs[before["name"]], 2
    n, h, w, c = a.shape
    sums = a[:, :h // p * p, :w // p * p].reshape(n, h // p, p, w // p, p, c).sum(axis=(2, 4))
    ties = sums % 4 == 2
    assert (ties & (sums < 0)).sum() >= 20 and (ties & (sums > 0)).sum() >= 20, case
    for layer in hmodel.get_layers():
        if layer.name in names:
            layer.set_attr("trace", True)
    _, trace = hmodel.trace(x.astype(np.float64) / 256.0)
    for layer in (l for l in contract.layers if l["name"] in names):
        got = np.asarray(trace[layer["name"]]).reshape(outs[layer["name"]].shape) * 2.0 ** layer["input"]["frac"]
        assert np.array_equal(got, np.rint(got))
        assert np.array_equal(got.astype(np.int64), outs[layer["name"]]), f"{case}: {layer['name']}"
