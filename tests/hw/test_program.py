"""The layer program's row tables reproduce the golden model's im2col exactly; bad arrays are refused."""

import numpy as np
import pytest

from prunehw.core.config import ArrayConfig
from prunehw.export.contract import Contract, chain_layers
from prunehw.hw.models.cycle_model import cycle_model, drain_cycles
from prunehw.hw.compile.program import IMAGE, build_program
from prunehw.export.kinds import KINDS
from contracts import conv_contract


def _im2col(a, k, stride=1, padding="valid"):
    """The golden model's windows of a convolution (its kind's ``columns``)."""
    return KINDS["conv2d"].columns({"kernel": k, "stride": stride, "padding": padding}, a)


def _contract(rng, h=9, w=7, c=3, k=3, n=5, rows_kept=None):
    fmt = {"bits": 8, "frac": 8, "signed": False}
    conv = {"name": "conv", "type": "conv2d", "kernel": k, "rows": k * k * c, "out_channels": n, "in_channels": c, "input": fmt,
            "weight": {"bits": 8, "frac": 6}, "bias": {"bits": 8, "frac": 14}, "accum": {"bits": 24, "frac": 14},
            "output": {"bits": 8, "frac": 4, "signed": False, "relu": True, "name": "r"}}
    if rows_kept is not None:
        conv["rows_kept"] = rows_kept
    flat_in = (h - k + 1) * (w - k + 1) * n
    dense = {"name": "fc", "type": "dense", "rows": flat_in, "out_channels": 4, "in_channels": flat_in,
             "input": {"bits": 8, "frac": 4, "signed": False}, "weight": {"bits": 8, "frac": 6}, "bias": {"bits": 8, "frac": 10},
             "accum": {"bits": 30, "frac": 10}, "output": {"bits": 30, "frac": 10, "signed": True, "relu": False, "name": None}}
    spec = {"version": 2, "input": {"shape": [h, w, c], **fmt},
            "layers": chain_layers((h, w, c), [conv, {"name": "f", "type": "flatten", "input": fmt}, dense])}
    weights = {"conv": rng.integers(-128, 128, (k * k * c, n)), "fc": rng.integers(-128, 128, (flat_in, 4))}
    return Contract(spec, weights, {"conv": rng.integers(-9, 9, n), "fc": rng.integers(-9, 9, 4)})


@pytest.mark.parametrize("rows, cols", [(4, 4), (3, 5), (8, 8)])
def test_row_table_addresses_equal_im2col(rows, cols, rng):
    contract = _contract(rng)
    prog = build_program(contract, ArrayConfig(rows=rows, cols=cols))
    conv = prog.ops[0]
    h, w, c = conv.in_shape
    act = rng.integers(0, 256, (h, w, c))
    # the activation buffer's word layout: word = ctile * npix + pixel, lane = channel % C
    words = np.zeros((max(1, -(-c // cols)) * h * w, cols), dtype=np.int64)
    for ch in range(c):
        words[(ch // cols) * h * w + np.arange(h * w), ch % cols] = act[:, :, ch].reshape(-1)
    ref = _im2col(act[None], 3)[0].reshape(-1, conv.rows)
    oh, ow = conv.out_shape[:2]
    for p in range(conv.positions):
        base = (p // ow) * w + (p % ow)
        gathered = [words[off + base, lane] for row in conv.row_table for off, lane, v in row if v]
        np.testing.assert_array_equal(gathered, ref[p])


@pytest.mark.parametrize("h, w, pool", [(9, 7, 2), (10, 10, 3), (6, 5, 1)])
def test_fused_pooling_walks_whole_windows(h, w, pool, rng):
    """A pooled convolution computes each window's positions consecutively and none that pooling discards."""
    contract = _contract(rng, h=h, w=w)
    conv = dict(contract.spec["layers"][0])
    if pool > 1:
        contract.spec["layers"].insert(1, {"name": "pool", "type": "maxpool2d", "pool": pool, "input": conv["output"]})
        ph, pw = (h - 2) // pool, (w - 2) // pool
        contract.spec["layers"][-1]["rows"] = contract.spec["layers"][-1]["in_channels"] = ph * pw * 5
        contract.weights["fc"] = rng.integers(-128, 128, (ph * pw * 5, 4))
        contract.spec["layers"][:] = chain_layers((h, w, 3), contract.spec["layers"])
    op = build_program(contract, ArrayConfig(rows=4, cols=4)).ops[0]
    oh, ow = h - 2, w - 2
    ph, pw = oh // pool, ow // pool
    assert op.positions == ph * pool * pw * pool and op.out_shape[:2] == (ph, pw)
    want = [(py * pool + dy) * w + px * pool + dx for py in range(ph) for px in range(pw)
            for dy in range(pool) for dx in range(pool)]
    assert op.base_pixels() == want
    assert len(set(want)) == len(want) and max(want) < h * w


@pytest.mark.parametrize("rows, cols", [(4, 4), (3, 5), (8, 8)])
def test_one_channel_image_is_packed(rows, cols, rng):
    """A one-channel image is stored P pixels a word; base + offset, split into word and lane, is im2col."""
    contract = _contract(rng, c=1)
    prog = build_program(contract, ArrayConfig(rows=rows, cols=cols))
    P = prog.image_pack
    assert P == {4: 4, 5: 4, 8: 8}[cols] and prog.buf_depth[IMAGE] == -(-9 * 7 // P)
    # (its pixels share words only by position: a beat gathers from several, so the image has R copies)
    assert prog.copies[IMAGE] == rows
    conv = prog.ops[0]
    h, w, _ = conv.in_shape
    act = rng.integers(0, 256, (h, w, 1))
    words = np.zeros((-(-h * w // P), cols), dtype=np.int64)
    for pix in range(h * w):
        words[pix // P, pix % P] = act.reshape(-1)[pix]
    ref = _im2col(act[None], 3)[0].reshape(-1, conv.rows)
    for p, base in enumerate(conv.base_pixels()):
        gathered = [words[(off + base) // P, (off + base) % P] for row in conv.row_table for off, lane, v in row if v]
        np.testing.assert_array_equal(gathered, ref[p])


def test_pruned_rows_leave_the_tiles(rng):
    full = build_program(_contract(rng), ArrayConfig(rows=4, cols=4))
    kept = [r for r in range(27) if r % 9 != 4]          # drop the centre tap of every channel
    pruned = build_program(_contract(rng, rows_kept=kept), ArrayConfig(rows=4, cols=4))
    assert (full.ops[0].rows, pruned.ops[0].rows) == (27, 24)
    assert pruned.ops[0].n_rt == 6 and full.ops[0].n_rt == 7
    assert cycle_model(pruned).per_op["conv"] < cycle_model(full).per_op["conv"]


def test_cycle_model_counts_folds(rng):
    """Checked against numbers worked out by hand, not against the model's own helpers: the 9x7x3 image
    under a 3x3 kernel gives 7x5 = 35 positions, 27 rows (7 row tiles of 4) and 5 filters (2 column
    tiles); the dense layer reads 175 rows (44 row tiles) into 4 outputs (1 column tile). On a 4x4
    array a matmul drains 8 (feed) + 3 (skew) + 3 (PE) + 3 (deskew) + 4 (bottom) - 1 = 20 cycles."""
    prog = build_program(_contract(rng), ArrayConfig(rows=4, cols=4))
    per = cycle_model(prog).per_op
    assert per == {"conv": 2 * 7 * 35 + 20, "fc": 44 + 20}
    assert drain_cycles(4, 4) == 20 and drain_cycles(8, 8) == 28


def test_buffers_read_one_word_a_beat_are_kept_in_one_copy(rng):
    """A layer whose row tiles each fall in one word (channels come C to a word) reads its buffer once a beat;
    rows gathered from several words need R copies."""
    contract = _contract(rng, c=4)          # 4 channels on a 4x4 array: each row tile is one pixel's word
    prog = build_program(contract, ArrayConfig(rows=4, cols=4))
    conv, fc = prog.ops
    assert (conv.in_buf, fc.in_buf) == (IMAGE, 0)
    assert all(len({off for off, _, v in row if v}) == 1 for row in conv.row_table)
    assert prog.copies[IMAGE] == 1
    # the dense layer reads 7x5x5 = 175 flattened values, 5 channels a pixel: row tiles straddle pixels
    assert prog.copies[0] == 4
    narrow = build_program(_contract(rng, c=3), ArrayConfig(rows=4, cols=4))
    assert narrow.copies[IMAGE] == 4


def test_array_too_narrow_for_the_input(rng):
    with pytest.raises(ValueError, match="the input has 3 channels but an array with 2 columns"):
        build_program(_contract(rng), ArrayConfig(rows=2, cols=2))


def test_counts_that_would_wrap_the_counters_are_refused():
    from prunehw.core.errors import ConfigError
    from prunehw.hw.generate import check_counters_fit

    check_counters_fit({"total_cycles": 2 ** 32 - 1, "macs": 5})
    with pytest.raises(ConfigError, match=r"counter 'macs' would reach 4294967296 in one inference, beyond the "
                                          r"accelerator's 32-bit counters"):
        check_counters_fit({"total_cycles": 10, "macs": 2 ** 32})


@pytest.mark.parametrize("h, w, c, k, s, padding, cols", [
    (9, 7, 3, 3, 1, "same", 4), (9, 7, 1, 3, 2, "same", 4), (9, 7, 3, 3, 2, "valid", 5), (8, 8, 2, 2, 2, "same", 4),
    (7, 9, 1, 5, 1, "same", 8), (10, 10, 3, 4, 3, "same", 4)])
def test_padded_and_strided_rows_equal_im2col(h, w, c, k, s, padding, cols, rng):
    """Base pixel (output y, x times the stride) plus each row's offset, on the map, is the golden model's
    padded, strided im2col; a tap on the padding must be masked (the golden model reads a zero there)."""
    contract = conv_contract(rng, h, w, c, [(k, s, padding, 3)])
    prog = build_program(contract, ArrayConfig(rows=4, cols=cols))
    conv, P = prog.ops[0], prog.image_pack
    act = rng.integers(1, 256, (h, w, c))                 # (no zeros: a zero in the reference is padding)
    words = np.zeros((-(-h * w // P) * max(1, -(-c // cols)), cols), dtype=np.int64)
    for ch in range(c):
        for pix in range(h * w):
            words[(ch // cols) * h * w // P + pix // P, pix % P if P > 1 else ch % cols] = act.reshape(-1, c)[pix, ch]
    ref = _im2col(act[None], k, s, padding)[0].reshape(-1, conv.rows)
    assert conv.positions == len(ref)
    masked = 0
    for pos, (yx, base) in enumerate(zip(conv.positions_yx(), conv.base_pixels())):
        got = []
        for row, taps in zip(conv.row_table, conv.row_taps):
            for (off, lane, v), tap in zip(row, taps):
                if not v:
                    continue
                if not conv.in_bounds(yx, tap):
                    got.append(0)
                    masked += 1
                    continue
                a = off + base
                got.append(words[a // P, a % P] if P > 1 else words[a, lane])
        np.testing.assert_array_equal(got, ref[pos])
    assert conv.padded == (masked > 0)       # (``same`` with nothing to pad, e.g. 8x8 under 2x2 stride 2: plain)


def test_a_fault_the_design_cannot_have_is_not_applicable(rng):
    """The feeder's per-row read enables matter only where a beat reads a replicated buffer with an idle row: with
    full row tiles over one-copy buffers that fault is equivalent to the design, and the campaign says so."""
    from prunehw.sim.faults import FAULTS

    fault = FAULTS["feed_read_ignores_row_valid"]
    short = build_program(_contract(rng), ArrayConfig(rows=4, cols=4))          # 27 rows: a last tile of 3
    assert short.copies[IMAGE] == 4 and fault.absent(short) is None
    full = build_program(_contract(rng, c=4, k=2), ArrayConfig(rows=4, cols=4))  # 16 rows over one-copy buffers
    assert all(v for op in full.matmuls() for row in op.row_table for _, _, v in row if full.copies[op.in_buf] > 1)
    assert "no beat reads a replicated buffer" in fault.absent(full)


@pytest.mark.parametrize("pools, absent", [((("maxpool2d", 2),), False), ((("avgpool2d", 2),), True),
                                           ((("maxpool2d", 2), ("avgpool2d", 2)), False), ((), True)])
def test_a_max_pooling_fault_is_not_applicable_where_nothing_takes_a_maximum(rng, pools, absent):
    """Max pooling's comparison matters only where some op takes the maximum of a window (fused or a pass of its
    own): in a design whose poolings all average (ResNet-8's AveragePooling2D(8)), or with none, keeping the
    minimum cannot change anything, and the campaign says so instead of calling the fault missed."""
    from prunehw.sim.faults import FAULTS

    program = build_program(conv_contract(rng, 10, 10, 1, [(3, 1, "valid", 4)], pools=pools), ArrayConfig(rows=4, cols=4))
    why = FAULTS["pool_min"].absent(program)
    assert (why == "no op takes a maximum (every pooling averages)") if absent else why is None
