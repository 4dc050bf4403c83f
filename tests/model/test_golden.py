"""The golden integer model against a deliberately naive reference, one stimulus for both."""

import numpy as np
import pytest

from prunehw.core.config import LayerSpec as L, NetworkConfig
from prunehw.export.contract import load_contract, save_contract
from prunehw.export.golden import golden, requantize
from prunehw.model.network import build_model
from prunehw.export.quantize import quantize


def naive_requant(acc: int, acc_frac: int, out: dict) -> int:
    """Exact rational arithmetic: relu, round half up, saturate."""
    from fractions import Fraction
    import math

    v = Fraction(max(acc, 0) if out["relu"] else acc, 2 ** acc_frac)
    q = math.floor(v * 2 ** out["frac"] + Fraction(1, 2))
    lo, hi = (-(2 ** (out["bits"] - 1)), 2 ** (out["bits"] - 1) - 1) if out["signed"] else (0, 2 ** out["bits"] - 1)
    return min(max(q, lo), hi)


@pytest.mark.parametrize("out", [
    {"bits": 8, "frac": 3, "signed": False, "relu": True},
    {"bits": 8, "frac": 5, "signed": True, "relu": False},
    {"bits": 4, "frac": 0, "signed": False, "relu": True},
    {"bits": 8, "frac": 12, "signed": False, "relu": True},   # shift left: more frac bits than the accumulator
])
def test_requantize_matches_exact_rounding(out, rng):
    acc = np.concatenate([rng.integers(-2**20, 2**20, 2000), np.arange(-64, 65),
                          np.array([2**30, -2**30, 2**7 - 1, 2**7, 2**7 + 1])])
    got = requantize(acc, 10, out)
    want = np.array([naive_requant(int(a), 10, out) for a in acc])
    np.testing.assert_array_equal(got, want)


def test_half_lsb_rounds_up():
    out = {"bits": 8, "frac": 0, "signed": True, "relu": False}
    # 2.5 -> 3, -2.5 -> -2 (half up), 2.25 -> 2, 1000 -> 127 (saturate)
    np.testing.assert_array_equal(requantize(np.array([10, -10, 9, 4000]), 2, out), [3, -2, 2, 127])


@pytest.mark.parametrize("pool", [1, 2, 4, 8])
def test_average_pooling_rounds_half_up_in_the_input_format(pool, rng):
    """The window's sum over pool*pool, rounded half toward +inf (as hls4ml's AP_RND and the hardware), against exact
    rational arithmetic; the crafted ties of a 2x2 window: -10/4 = -2.5 -> -2, 10/4 -> 3, -6/4 -> -1, -7/4 -> -2."""
    import math
    from fractions import Fraction

    from prunehw.export.golden import apply_layer

    layer = {"name": "p", "type": "avgpool2d", "pool": pool, "input": {"bits": 8, "frac": 5, "signed": True}}
    a = rng.integers(-128, 128, (3, 2 * pool + 1, 2 * pool, 4))     # (a last row left over is dropped, as by Keras)
    got = apply_layer(layer, a, None)
    want = [[[[math.floor(Fraction(int(a[n, y * pool:(y + 1) * pool, x * pool:(x + 1) * pool, c].sum()), pool * pool)
                          + Fraction(1, 2)) for c in range(4)] for x in range(a.shape[2] // pool)]
             for y in range(a.shape[1] // pool)] for n in range(3)]
    np.testing.assert_array_equal(got, want)
    if pool == 2:
        ties = np.array([[-3, -3, -3, -1], [5, 5, 0, 0], [-3, -3, 0, 0], [-4, -2, -1, 0]]).reshape(4, 2, 2, 1)
        np.testing.assert_array_equal(apply_layer(layer, ties, None).ravel(), [-2, 3, -1, -2])


@pytest.mark.parametrize("pool", [3, [3, 2], [2, 5], [1, 3]])
def test_an_average_of_any_window_truncates_its_quotient_then_rounds_half_up(pool, rng):
    """A window of n values, n not a power of two: the sum over n truncated toward zero at E = ceil(log2 n) more
    fractional bits (as hls4ml's ap_fixed division does), then rounded half toward +inf; against exact rational
    arithmetic. A negative quotient may round otherwise than the real average: -23/9 -> -2.5 (truncated) -> -2."""
    import math
    from fractions import Fraction

    from prunehw.export.golden import apply_layer

    ph, pw = (pool, pool) if isinstance(pool, int) else pool
    n, e = ph * pw, math.ceil(math.log2(ph * pw))
    layer = {"name": "p", "type": "avgpool2d", "pool": pool, "input": {"bits": 8, "frac": 5, "signed": True}}
    a = rng.integers(-128, 128, (3, 2 * ph + 1, 3 * pw, 4))

    def want(s: int) -> int:
        q = Fraction(int(Fraction(s, n) * 2 ** e), 2 ** e)       # (int() truncates toward zero)
        return math.floor(q + Fraction(1, 2))

    got = apply_layer(layer, a, None)
    ref = [[[[want(int(a[b, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw, c].sum())) for c in range(4)]
             for x in range(a.shape[2] // pw)] for y in range(a.shape[1] // ph)] for b in range(3)]
    np.testing.assert_array_equal(got, ref)
    if pool == 3:   # -23/9 = -2.556: truncated at E = 4 bits to -40/16 = -2.5, rounded half up to -2 (not -3)
        tie = np.full((1, 3, 3, 1), -3)
        tie[0, 2, 2, 0] = 1
        assert tie.sum() == -23 and apply_layer(layer, tie, None).item() == -2


def naive_golden(contract, img: np.ndarray) -> np.ndarray:
    """Loop-per-output reference of the contract on one image (python ints)."""
    a = img.astype(object)
    for layer in contract.layers:
        t = layer["type"]
        if t == "conv2d":
            k, w, b = layer["kernel"], contract.weights[layer["name"]], contract.biases[layer["name"]]
            h, wd, c = a.shape
            out = np.zeros((h - k + 1, wd - k + 1, w.shape[1]), dtype=object)
            for y in range(h - k + 1):
                for x in range(wd - k + 1):
                    patch = [a[y + ky, x + kx, ci] for ky in range(k) for kx in range(k) for ci in range(c)]
                    for j in range(w.shape[1]):
                        acc = int(b[j]) + sum(int(p) * int(w[r, j]) for r, p in enumerate(patch))
                        out[y, x, j] = acc if layer is contract.weighted()[-1] else naive_requant(acc, layer["accum"]["frac"], layer["output"])
            a = out
        elif t == "dense":
            w, b = contract.weights[layer["name"]], contract.biases[layer["name"]]
            accs = [int(b[j]) + sum(int(a[r]) * int(w[r, j]) for r in range(len(a))) for j in range(w.shape[1])]
            last = layer is contract.weighted()[-1]
            a = np.array([acc if last else naive_requant(acc, layer["accum"]["frac"], layer["output"]) for acc in accs], dtype=object)
        elif t == "maxpool2d":
            p = layer["pool"]
            h, wd, c = a.shape
            a = np.array([[[max(a[y * p + dy, x * p + dx, ci] for dy in range(p) for dx in range(p)) for ci in range(c)]
                           for x in range(wd // p)] for y in range(h // p)], dtype=object)
        else:
            a = a.reshape(-1)
    return np.array(a, dtype=np.int64)


@pytest.fixture(scope="module")
def small_contract(tmp_path_factory, tiny_data):
    net = NetworkConfig(layers=(L(type="conv2d", filters=3, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                                L(type="conv2d", filters=4, kernel=3), L(type="relu"), L(type="maxpool2d", pool=3),
                                L(type="flatten"), L(type="dense", units=6), L(type="relu"),
                                L(type="dense", units=10)))
    model = build_model(net, (28, 28, 1), 10, seed=4)
    spec, w, b = quantize(model, tiny_data.x_train[:64])
    path = tmp_path_factory.mktemp("c") / "contract.json"
    save_contract(path, spec, w, b)
    return load_contract(path)


def test_golden_equals_naive_reference(small_contract, tiny_data, rng):
    imgs = np.concatenate([tiny_data.x_test[:3], np.full((1, 28, 28, 1), 255, np.uint8),
                           rng.integers(0, 256, (1, 28, 28, 1)).astype(np.uint8)])
    got = golden(small_contract, imgs)
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(got[i], naive_golden(small_contract, img))


def test_accumulator_width_cannot_overflow_and_is_no_wider_than_needed(small_contract):
    """Interval arithmetic along the network, re-derived here through the golden model's own layer arithmetic:
    each input channel takes the range its layer's input can reach (the pixels' [0, 255], then the requantized
    extremes of the layer before; a pooling and a flatten keep their channel's range), the worst inputs for each
    output (each input at whichever end pushes that output's sum further) stay inside the declared accumulator,
    and one bit less would not hold them (or the bias)."""
    from prunehw.export.golden import apply_layer

    lo_c, hi_c = np.zeros(1, np.int64), np.full(1, 255, np.int64)      # per channel of the current tensor
    for layer in small_contract.layers:
        if layer["type"] not in ("conv2d", "dense"):
            continue           # (the test's network: poolings and a flatten, which keep each channel's range)
        w, b = small_contract.weights[layer["name"]], small_contract.biases[layer["name"]]
        lo_in, hi_in = np.tile(lo_c, w.shape[0] // len(lo_c)), np.tile(hi_c, w.shape[0] // len(lo_c))
        # per output column j: the inputs that maximise, then minimise, its sum (a conv's im2col row is a dense input)
        worst = np.concatenate([np.where(w.T > 0, hi_in, lo_in), np.where(w.T > 0, lo_in, hi_in)]).astype(np.int64)
        raw = {**layer, "type": "dense", "output": {**layer["accum"], "signed": True, "relu": False}}
        acc = apply_layer(raw, worst, small_contract)
        n = w.shape[1]
        acc_hi, acc_lo = np.diag(acc[:n]), np.diag(acc[n:])
        half = 2 ** (layer["accum"]["bits"] - 1)
        assert -half <= acc_lo.min() and acc_hi.max() < half, (layer["name"], acc_lo.min(), acc_hi.max())
        top = max(-acc_lo.min(), acc_hi.max(), np.abs(b).max())
        assert top >= half // 2, (layer["name"], top, "one bit less would hold every accumulator")
        assert np.abs(w).max() <= 2 ** (layer["weight"]["bits"] - 1)
        lo_c, hi_c = (requantize(v, layer["accum"]["frac"], layer["output"]) for v in (acc_lo, acc_hi))


def test_return_all_layers(small_contract, tiny_data):
    logits, layers = golden(small_contract, tiny_data.x_test[:5], return_all=True)
    assert list(layers) == [l["name"] for l in small_contract.layers]
    np.testing.assert_array_equal(layers[small_contract.layers[-1]["name"]], logits)
    assert layers["conv1"].min() >= 0 and layers["conv1"].max() <= 255


def test_golden_refuses_wrong_images(small_contract):
    from prunehw.core.errors import DataError

    with pytest.raises(DataError, match="dtype float32; allowed: uint8"):
        golden(small_contract, np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(DataError, match=r"images are \(32, 32, 1\); the contract expects \(28, 28, 1\)"):
        golden(small_contract, np.zeros((2, 32, 32, 1), np.uint8))


@pytest.mark.parametrize("peak, int_bits", [(4.0, 3), (3.98, 2), (3.99, 3), (4.01, 3), (1.0, 1), (0.75, 0), (0.3, 0),
                                             (0.0, 0)])
def test_activation_integer_bits_hold_the_calibration_peak(peak, int_bits):
    """A peak that is exactly a power of two (or within an LSB below it) must not saturate its own maximum; a
    peak below 1 gets no negative integer bits."""
    from prunehw.export.quantize import _act_int_bits

    assert _act_int_bits(peak, 8) == int_bits
    frac = 8 - int_bits
    assert (2 ** 8 - 1) * 2.0 ** -frac >= peak      # the unsigned 8-bit format's maximum holds the peak


def test_stimulus_covers_every_reachable_layer_event(small_contract, tiny_data):
    """The mutation campaign's images: each layer event is covered by a chosen image, proven unreachable (the first
    layer's exact extreme misses it), or reported as not reached; the chosen images really cause what they claim."""
    from prunehw.export.golden import layer_events
    from prunehw.sim.stimulus import choose_stimulus

    images, rows = choose_stimulus(small_contract, tiny_data.x_test, 2)
    assert len(images) >= 2 and {r["event"] for r in rows} == set(layer_events(small_contract, tiny_data.x_test[:1]))
    again, rows_again = choose_stimulus(small_contract, tiny_data.x_test, 2)
    assert np.array_equal(again, images) and rows_again == rows, "the search is bounded by work, not time: same images"
    hit = layer_events(small_contract, images)
    for r in rows:
        if r["covered_by"].startswith(("test image", "searched", "constructed")):
            assert r["status"] == "reached", r
            assert hit[r["event"]][r["first_stimulus_image"]] and not hit[r["event"]][:r["first_stimulus_image"]].any(), r
        elif r["covered_by"].startswith("unreachable"):
            assert r["status"] == "unreachable" and r["bound"] < 1 and r["bound_by"] in r["covered_by"], r
        else:
            assert r["status"] == "undecided" and r["covered_by"] == "not reached" and r["closest"] < 1 <= r["bound"], r
    # an event called unreachable never happens, whatever the image
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 28, 28, 1)).astype(np.uint8)
    wild = layer_events(small_contract, np.concatenate([noise, np.full((1, 28, 28, 1), 255, np.uint8)]))
    for r in rows:
        if r["covered_by"].startswith("unreachable"):
            assert not wild[r["event"]].any(), r


def test_accumulator_bounds_hold_every_image_and_are_exact_for_the_first_layer(small_contract, tiny_data):
    """The interval bounds that prove events unreachable: no image (test images, noise, all white, the first
    layer's constructed extremes) gets outside them, and the first layer's are attained."""
    from prunehw.export.golden import accumulate, apply_layer
    from prunehw.sim.stimulus import _accumulator_bounds, _first_layer_extremes

    rng = np.random.default_rng(1)
    extremes = _first_layer_extremes(small_contract, (28, 28, 1))
    x = np.concatenate([tiny_data.x_test[:100].reshape(-1, 28, 28, 1), rng.integers(0, 256, (100, 28, 28, 1)),
                        np.full((1, 28, 28, 1), 255), extremes]).astype(np.int64)
    bounds, _ = _accumulator_bounds(small_contract)
    a = x
    for layer in small_contract.layers:
        if layer["type"] in ("conv2d", "dense"):
            acc = accumulate(layer, a, small_contract)
            acc = acc.reshape(-1, acc.shape[-1])
            lo, hi = bounds[layer["name"]]
            assert (acc >= lo).all() and (acc <= hi).all(), layer["name"]
            if layer is small_contract.weighted()[0]:
                assert (acc.max(axis=0) == hi).all(), "the first layer's upper bound is attained by its extremes"
        a = apply_layer(layer, a, small_contract)


def test_window_vertex_bounds_hold_against_an_exact_search_and_beat_the_intervals(small_contract):
    """The second layer's bound over each window tap's pixel vertices is sound: an exact coordinate ascent on the
    pixels under one output (every pixel to 0, 255 or a step either way, scored by the golden model, from several
    starts) never passes it, on either side; and it is at least as tight as interval arithmetic, tighter for some
    channel."""
    from prunehw.export.golden import requantize
    from prunehw.export.bounds import interval as _interval
    from prunehw.sim.stimulus import _window_vertex_bounds

    first, second = small_contract.weighted()[:2]
    # the first layer's exact accumulator bounds; requantized, its output range per channel (which its max pool keeps)
    first_acc = _interval(first, np.zeros(1, np.int64), np.full(1, 255, np.int64), small_contract)
    lo, hi = _window_vertex_bounds(small_contract, first_acc[1])
    first_out = [requantize(v.astype(np.int64), first["accum"]["frac"], first["output"]) for v in first_acc]
    i_lo, i_hi = _interval(second, *first_out, small_contract)
    assert np.all(lo >= i_lo) and np.all(hi <= i_hi) and (np.any(lo > i_lo) or np.any(hi < i_hi))

    rng = np.random.default_rng(3)
    for j in range(second["out_channels"]):
        for sign in (1, -1):
            best = _second_layer_ascent(small_contract, j, sign, rng)
            assert (best <= hi[j]) if sign > 0 else (-best >= lo[j]), (j, sign, best, lo[j], hi[j])


def _second_layer_value(contract, x, j, sign):
    """``sign`` times the second weighted layer's accumulator of channel ``j`` at its first position, per image."""
    from prunehw.export.golden import accumulate, apply_layer

    second = contract.weighted()[1]
    a = x.astype(np.int64)
    for layer in contract.layers:
        if layer is second:
            return sign * accumulate(layer, a, contract)[:, 0, 0, j]
        a = apply_layer(layer, a, contract)


def _second_layer_ascent(contract, j, sign, rng, starts=3):
    """The largest value an exact coordinate ascent on the pixels under the second layer's first output (every
    pixel to 0, 255 or a step either way, scored by the golden model) finds for :func:`_second_layer_value`, from
    an all-zero start and random binary ones."""
    top = -np.inf
    for start in range(starts):
        cur = (rng.integers(0, 2, (8, 8, 1)) * 255).astype(np.int64) if start else np.zeros((8, 8, 1), np.int64)
        best = _second_layer_value(contract, cur[None], j, sign)[0]
        while True:
            flat = cur.reshape(-1)
            cands = np.repeat(flat[None], 4 * flat.size, axis=0)
            for k, step in enumerate((-255, 255, -32, 32)):
                idx = np.arange(flat.size)
                cands[k * flat.size + idx, idx] = np.clip(flat + step, 0, 255)
            scores = _second_layer_value(contract, cands.reshape(-1, 8, 8, 1), j, sign)
            if scores.max() <= best:
                break
            best, cur = scores.max(), cands[int(scores.argmax())].reshape(8, 8, 1)
        top = max(top, best)
    return top


def _first_hi(contract) -> np.ndarray:
    """The first layer's largest accumulator per channel over every 8-bit image (exact: its interval bound)."""
    from prunehw.export.bounds import interval

    return interval(contract.weighted()[0], np.zeros(1, np.int64), np.full(1, 255, np.int64), contract)[1]


def _unsaturated_contract(filters: int = 3):
    """A hand-made conv -> max pool -> conv network whose first layer (of ``filters`` channels) cannot saturate (its
    output's range holds every accumulator), so that the receptive-field bound fits minorants (where it can
    saturate, only 0 is one)."""
    from contracts import conv_contract

    c = conv_contract(np.random.default_rng(7), 12, 12, 1, [(3, 1, "valid", filters), (3, 1, "valid", 2)], pool=2)
    c.spec["layers"][0]["output"]["frac"] = 3
    return c


@pytest.mark.parametrize("network", ["trained", "unsaturated"])
def test_receptive_field_search_is_exact_and_its_bound_holds(small_contract, network):
    """Over the second layer's whole receptive field: the max-sum elimination's largest value over the binary images
    is what the golden model gives on the image it constructs, and no binary image (random ones, each one pixel
    flipped from the constructed one) passes it; the field bound (minorants fitted to the whole field by cutting
    planes) lies between it and the per-tap vertex bound and holds against the exact coordinate ascent (which is
    free to leave the vertices). On the trained small network (whose first layer can saturate) and on a hand-made
    one whose first layer cannot (the minorants are then fitted)."""
    from prunehw.sim.receptive import field
    from prunehw.sim.stimulus import _field_best, _field_bound_at, _window_vertex_bounds

    contract = small_contract if network == "trained" else _unsaturated_contract()
    first_hi = _first_hi(contract)
    lo, hi = _window_vertex_bounds(contract, first_hi)
    f = field(contract)
    assert (f.block, f.cell, f.per_tap, f.grid) == ((4, 4), (2, 2), (2, 2), (4, 4))
    verts = f.vertices(first_hi)
    assert (len(verts["minorants"]) > 1) == (network == "unsaturated")
    rng = np.random.default_rng(5)
    for j, sign in ((0, 1), (1, -1)):
        best, img = _field_best(contract, f, verts, j, sign)
        assert _second_layer_value(contract, img[None], j, sign)[0] == best
        field_px = img[:8, :8].reshape(-1)
        flips = np.repeat(field_px[None], field_px.size, axis=0)
        flips[np.arange(field_px.size), np.arange(field_px.size)] ^= 255
        binary = np.concatenate([flips, rng.integers(0, 2, (256, field_px.size)) * 255]).reshape(-1, 8, 8, 1)
        assert _second_layer_value(contract, binary, j, sign).max() <= best
        bound = _field_bound_at(contract, f, verts, j, sign, rounds=6)
        per_tap = hi[j] if sign > 0 else -lo[j]
        assert best <= bound <= per_tap, (j, sign, best, bound, per_tap)
        assert _second_layer_ascent(contract, j, sign, rng) <= bound


def test_integer_program_is_the_golden_model_over_the_receptive_field(small_contract):
    """The exact integer program over the second layer's receptive field: with an image's pixels fixed (random
    images, the largest binary image), its value is the golden model's accumulator on that image, so every image is
    one of its solutions; asked for the best that the binary images and the exact coordinate ascent reach, it
    finds an image whose golden value gets there; asked for one more than the field bound (sound), it proves no
    image does. Where the first layer can saturate (the trained small network), it does not apply."""
    from prunehw.sim.receptive import field, integer_program
    from prunehw.sim.stimulus import _field_best, _field_bound_at

    trained_hi = _first_hi(small_contract)
    assert integer_program(field(small_contract), field(small_contract).weights()[..., 0], 0.0, trained_hi) is None
    contract = _unsaturated_contract(filters=2)          # (two channels: a decision takes HiGHS seconds)
    second = contract.weighted()[1]
    first_hi = _first_hi(contract)
    f = field(contract)
    verts = f.vertices(first_hi)
    rng = np.random.default_rng(11)
    for j, sign in ((0, 1), (1, -1)):
        w, bias = sign * f.weights()[..., j], sign * float(contract.biases[second["name"]][j])
        binary_best, binary_img = _field_best(contract, f, verts, j, sign)
        images = np.concatenate([rng.integers(0, 256, (5, 8, 8, 1)) * (rng.random((5, 8, 8, 1)) < 0.7),
                                 binary_img[None, :8, :8]])
        for img in images:
            status, value, _ = integer_program(f, w, bias, first_hi, pixels=img)
            assert status == "found" and value == _second_layer_value(contract, img[None], j, sign)[0]
        known = max(binary_best, _second_layer_ascent(contract, j, sign, rng))
        status, value, img = integer_program(f, w, bias, first_hi, at_least=known)
        assert status == "found" and _second_layer_value(contract, img[None], j, sign)[0] == value >= known
        bound = _field_bound_at(contract, f, verts, j, sign, rounds=6)
        assert integer_program(f, w, bias, first_hi, at_least=bound + 1)[0] == "none"

