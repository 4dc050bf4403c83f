"""The whole-network accelerator in Amaranth's simulator: logits equal the golden model, counters the cycle and activity models."""

import numpy as np
import pytest

from prunehw.core.config import ArrayConfig, LayerSpec as L, NetworkConfig
from prunehw.export.contract import load_contract, save_contract
from prunehw.hw.gateware.accelerator import COUNTERS
from prunehw.hw.models.cycle_model import activity_model, cycle_model
from prunehw.hw.compile.program import build_program
from prunehw.export.golden import golden
from prunehw.model.network import build_model
from prunehw.export.quantize import quantize
from amaranth_run import run_images

SMALL = NetworkConfig(layers=(L(type="conv2d", filters=3, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                              L(type="conv2d", filters=5, kernel=3), L(type="relu"), L(type="maxpool2d", pool=3),
                              L(type="flatten"), L(type="dense", units=7), L(type="relu"), L(type="dense", units=10)))


def check(contract, array, images, *, overlap=False):
    program = build_program(contract, array)
    model = cycle_model(program)
    activity = activity_model(program)
    want = golden(contract, images)
    results = run_images(program, images, overlap=overlap)
    assert len(results) == len(images)
    for (logits, counters), ref in zip(results, want):
        np.testing.assert_array_equal(logits, ref)
        assert counters["total_cycles"] == model.total
        assert {op.name: counters[op.name] for op in program.ops} == model.per_op
        assert counters["beats"] == model.beats and counters["macs"] == model.macs
        assert {k: counters[k] for k in COUNTERS} == activity


#: Second convs whose positions per fold (M) are at and below the partial-sum forwarding distance:
#: 2x2 = 4 positions (forwarded across 4 beats) and 1x1 (a conv that accumulates like a dense layer).
FORWARDED = {
    "conv_m4": NetworkConfig(layers=(L(type="conv2d", filters=3, kernel=3), L(type="relu"),
                                     L(type="maxpool2d", pool=6), L(type="conv2d", filters=5, kernel=3),
                                     L(type="relu"), L(type="flatten"), L(type="dense", units=10))),
    "conv_m1": NetworkConfig(layers=(L(type="conv2d", filters=3, kernel=3), L(type="relu"),
                                     L(type="maxpool2d", pool=6), L(type="conv2d", filters=5, kernel=4),
                                     L(type="relu"), L(type="flatten"), L(type="dense", units=10))),
}


#: A pooling layer after a fused one has no convolution to fuse into: it runs as a pooling pass of its own.
STANDALONE_POOL = NetworkConfig(layers=(L(type="conv2d", filters=3, kernel=3), L(type="relu"),
                                        L(type="maxpool2d", pool=2), L(type="maxpool2d", pool=2), L(type="flatten"),
                                        L(type="dense", units=10)))


#: A last layer of one row tile (K = 3 <= R) and three column tiles: its folds are single beats with a new
#: bias each, back to back.
ONE_ROW_TILE = NetworkConfig(layers=(L(type="conv2d", filters=3, kernel=3), L(type="relu"),
                                     L(type="maxpool2d", pool=6), L(type="flatten"), L(type="dense", units=3),
                                     L(type="relu"), L(type="dense", units=10)))


def _contract(network, folder, tiny_data):
    model = build_model(network, (28, 28, 1), 10, seed=8)
    spec, w, b = quantize(model, tiny_data.x_train[:64])
    path = folder / "contract.json"
    save_contract(path, spec, w, b)
    return load_contract(path)


@pytest.mark.parametrize("name", sorted(FORWARDED))
def test_partial_sums_forwarded_for_short_folds(name, tmp_path, tiny_data):
    """A row tile returning before its partial sum's memory write lands takes the forwarded sum."""
    check(_contract(FORWARDED[name], tmp_path, tiny_data), ArrayConfig(rows=4, cols=4), tiny_data.x_test[:2])


def test_back_to_back_folds_with_new_biases(tmp_path, tiny_data):
    """Each beat takes its own column tile's bias, however closely folds of different column tiles follow."""
    contract = _contract(ONE_ROW_TILE, tmp_path, tiny_data)
    rng = np.random.default_rng(3)
    for name, b in contract.biases.items():   # an untrained model's biases are all 0: give each column its own
        contract.biases[name] = rng.integers(-100, 100, b.shape)
    check(contract, ArrayConfig(rows=4, cols=4), tiny_data.x_test[:2])


def test_pooling_fused_into_convolutions_and_standalone(tmp_path, tiny_data):
    from prunehw.hw.compile.program import MatmulOp, PoolOp

    contract = _contract(STANDALONE_POOL, tmp_path, tiny_data)
    program = build_program(contract, ArrayConfig(rows=4, cols=4))
    conv, pool, fc = program.ops
    assert isinstance(conv, MatmulOp) and isinstance(pool, PoolOp) and isinstance(fc, MatmulOp)
    assert (conv.window, conv.conv_shape[:2], conv.out_shape[:2], conv.positions) == ((2, 2), (26, 26), (13, 13), 26 * 26)
    assert pool.in_shape[:2] == (13, 13) and pool.out_shape[:2] == (6, 6)
    check(contract, ArrayConfig(rows=4, cols=4), tiny_data.x_test[:2])


@pytest.fixture(scope="module")
def small_contract(tmp_path_factory, tiny_data):
    model = build_model(SMALL, (28, 28, 1), 10, seed=8)
    spec, w, b = quantize(model, tiny_data.x_train[:64])
    path = tmp_path_factory.mktemp("acc") / "contract.json"
    save_contract(path, spec, w, b)
    return load_contract(path)


@pytest.mark.parametrize("rows, cols", [(4, 4), (3, 5), (2, 3), (4, 8), (8, 8), (16, 16)])
def test_small_network_bit_exact_and_cycles(small_contract, tiny_data, rows, cols):
    check(small_contract, ArrayConfig(rows=rows, cols=cols), tiny_data.x_test[:2])


def test_next_image_loads_while_this_one_runs(small_contract, tiny_data):
    """Each image is loaded into the free slot during the previous inference: results and cycles unchanged,
    and the images follow each other by the inference and the host's read-out alone."""
    array, images = ArrayConfig(rows=4, cols=4), tiny_data.x_test[:3]
    check(small_contract, array, images, overlap=True)
    serial = [c["start_cycle"] for _, c in run_images(build_program(small_contract, array), images)]
    streamed = [c["start_cycle"] for _, c in run_images(build_program(small_contract, array), images, overlap=True)]
    load = 28 * 28
    assert [b - a for a, b in zip(streamed, streamed[1:])] == [s - load for s in np.diff(serial)]


def test_overlap_needs_the_slot_swap(small_contract, tiny_data):
    """With the slot hand-over broken, the streamed next image overwrites the one being computed."""
    program, images = build_program(small_contract, ArrayConfig(rows=4, cols=4)), tiny_data.x_test[:3]
    want = golden(small_contract, images)
    serial = run_images(program, images, fault="image_slot_not_swapped")
    assert all(np.array_equal(l, w) for (l, _), w in zip(serial, want))     # loaded, then started: unaffected
    streamed = run_images(program, images, overlap=True, fault="image_slot_not_swapped")
    assert not all(np.array_equal(l, w) for (l, _), w in zip(streamed, want))


#: Hidden layers with and without ReLU: narrow signed activations are stored and sign-extended on the way back.
SIGNED_HIDDEN = NetworkConfig(layers=(L(type="conv2d", filters=3, kernel=3), L(type="maxpool2d", pool=2),
                                      L(type="conv2d", filters=5, kernel=3), L(type="relu"), L(type="maxpool2d", pool=3),
                                      L(type="flatten"), L(type="dense", units=7), L(type="dense", units=10)))


@pytest.mark.parametrize("weight_bits, act_bits", [(4, 4), (3, 6), (2, 2), (8, 5), ((6, 3, 2, 6), 4)],
                         ids=["w4a4", "w3a6", "w2a2", "w8a5", "per-layer-w6326-a4"])
def test_narrow_weights_and_activations_are_stored_at_their_width(weight_bits, act_bits, tmp_path, tiny_data):
    """Weights packed at their layer's width into one ROM per width (R x C x bits a word), the multipliers'
    weight operand at the widest, the ping-pong buffers' lanes at the hidden layers' width (the image stays
    bytes): bit-exact, and every counter (the weight bits read among them) equal to the model."""
    model = build_model(SIGNED_HIDDEN, (28, 28, 1), 10, seed=8)
    names = [l.name for l in model.layers if l.name.startswith(("conv", "dense"))]
    per_layer = dict(zip(names, weight_bits)) if isinstance(weight_bits, tuple) else dict.fromkeys(names, weight_bits)
    spec, w, b = quantize(model, tiny_data.x_train[:64], weight_bits=per_layer, act_bits=act_bits)
    save_contract(tmp_path / "c.json", spec, w, b)
    contract = load_contract(tmp_path / "c.json")
    array = ArrayConfig(rows=4, cols=4)
    program = build_program(contract, array)
    assert (program.weight_bits, program.act_bits) == (max(per_layer.values()), act_bits)
    from prunehw.hw.gateware.accelerator import Accelerator

    accel = Accelerator(program=program)
    accel._MustUse__silence = True     # only its memory shapes are read here; check() simulates another
    shapes = accel.memory_shapes()
    tiles = {bits: sum(len(o.tiles) for o in program.matmuls() if o.weight_bits == bits) for bits in per_layer.values()}
    roms = {n: s for n, s in shapes.items() if n.startswith("feeder.wrom")}
    if len(tiles) == 1:
        assert roms == {"feeder.wrom": (4 * 4 * per_layer[names[0]], *tiles.values())}
    else:
        assert roms == {f"feeder.wrom_w{bits}": (4 * 4 * bits, n) for bits, n in tiles.items()}
    assert all(bits == 4 * act_bits for name, (bits, _) in shapes.items() if name.startswith("act"))
    assert all(bits == 4 * 8 for name, (bits, _) in shapes.items() if name.startswith("img"))
    check(contract, array, tiny_data.x_test[:2])
    if weight_bits == 4:
        # the mutation campaign's weight sign-bit fault hits the register's top bit at any width (it once cleared
        # bit 7, which a 4-bit register does not have: the fault changed nothing and went uncaught)
        images = tiny_data.x_test[:1].reshape(1, 28, 28, 1)
        assert run_images(program, images, fault="pe_weight_sign_stuck0") != run_images(program, images)


@pytest.mark.parametrize("case, rows, cols", [
    (dict(h=9, w=7, c=3, convs=[(3, 1, "same", 5)]), 4, 4),
    (dict(h=9, w=7, c=1, convs=[(5, 1, "same", 4), (3, 2, "same", 8)], pool=2), 8, 8),     # packed image, gathered rows
    (dict(h=10, w=10, c=3, convs=[(3, 2, "same", 8), (3, 1, "same", 8)], pool=3), 4, 4),  # one-copy buffers padded
    (dict(h=9, w=7, c=3, convs=[(3, 2, "valid", 5)]), 4, 4),
    (dict(h=12, w=12, c=3, convs=[(3, 1, "same", 5), (3, 1, "valid", 4)], pools=[("avgpool2d", 2), ("avgpool2d", 2)]), 4, 4),
    (dict(h=12, w=12, c=1, convs=[(3, 1, "valid", 5), (3, 1, "same", 4)], pools=[("maxpool2d", 2), ("avgpool2d", 2)]), 8, 8),
], ids=["same", "packed-same-stride2-pool", "one-copy-same-pool3", "valid-stride2", "avg-fused-and-alone",
        "max-fused-avg-alone"])
def test_padding_strides_and_average_pooling(case, rows, cols, rng):
    """``same`` padding (zeros from the feeder's edge check, never stored), strides and average pooling (fused
    and a pass of its own): logits equal the golden model's, cycles and every activity counter the analytic
    model's (a row on the padding reads nothing)."""
    from contracts import conv_contract

    contract = conv_contract(rng, **case)
    h, w, c = contract.spec["input"]["shape"]
    check(contract, ArrayConfig(rows=rows, cols=cols), rng.integers(0, 256, (2, h, w, c)).astype(np.uint8))


def test_shared_mutant_build_switches_one_fault_at_a_time(small_contract, tiny_data):
    """The mutation campaign's shared build: with fault_select 0 it is the production design (same logits and
    counters); with a fault's number it behaves as that fault built alone."""
    from prunehw.sim.faults import FAULTS, SelectTaps

    program, images = build_program(small_contract, ArrayConfig(rows=4, cols=4)), tiny_data.x_test[:3]
    names = ["image_slot_not_swapped", "skew_row1_short", "pe_mult_flag_stuck0"]
    taps = SelectTaps(names)
    clean = run_images(program, images, overlap=True, taps=taps, select=0)
    # elaborated now: the skew chain's depth is structure, which no multiplexer can choose
    assert taps.static == {"skew_row1_short"} and taps.selectable == [names[0], names[2]]
    assert clean == run_images(program, images, overlap=True)
    for name in taps.selectable:
        shared = run_images(program, images, overlap=True, taps=SelectTaps(names), select=taps.index(name))
        assert shared == run_images(program, images, overlap=True, fault=name) != clean, name
    assert set(names) <= set(FAULTS)


# (Amaranth's simulator runs the 8x8 designs at a few hundred cycles a second: one image each for the two designs
# of the dense structure, three for the pruned one with gathered rows; Verilator runs the same designs' Verilog on
# every test image in the regression)
@pytest.mark.parametrize("variant, n", [("dense", 1), ("unstructured-0.90", 1), ("matrix-0.80", 3)])
def test_quick_flow_variants_on_mnist(quick_flow, mnist, variant, n):
    """The quick flow's trained and pruned variants, on MNIST test images, on the default 8x8 array."""
    contract = load_contract(quick_flow.quantize(variant))
    check(contract, quick_flow.cfg.array, mnist.x_test[:n])


def test_every_view_of_the_counters_follows_the_one_definition(small_contract):
    """One definition of the counters (``hw/host/counters.py``): the RTL's host map, the description the
    testbenches read, the activity model's keys and the expected vector all follow it, in its order."""
    from prunehw.hw.gateware.accelerator import Accelerator
    from prunehw.hw.generate import describe
    from prunehw.hw.host.counters import COUNTER_SPECS, EVENTS, counter_names
    from prunehw.hw.models.cycle_model import expected_counters

    program = build_program(small_contract, ArrayConfig(rows=4, cols=4))
    ops = [op.name for op in program.ops]
    names = counter_names(ops)
    assert names == [c.name for c in COUNTER_SPECS] + [f"cycles_{o}" for o in ops]
    assert all(c.meaning and c.bits == 32 and c.source in ("controller", "event") for c in COUNTER_SPECS)
    assert EVENTS == COUNTERS[3:] and len(set(names)) == len(names)
    accel = Accelerator(program=program)
    desc = describe(program, accel)
    host = accel.host_map()
    assert desc["counters"] == names
    assert [n for n, _ in sorted(host.items(), key=lambda kv: kv[1])][program.n_logits:] == names
    activity, per_op = activity_model(program), cycle_model(program).per_op
    assert list(activity) == list(COUNTERS)
    assert expected_counters(program) == [activity[k] for k in COUNTERS] + [per_op[o] for o in ops]
    accel._MustUse__silence = True
