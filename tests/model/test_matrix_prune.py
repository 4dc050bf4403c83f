import numpy as np
import pytest

from prunehw.core.config import ArrayConfig, LayerSpec as L, NetworkConfig
from prunehw.model.matrix_form import full_maps, geometry
from prunehw.model.matrix_prune import prune_matrix, structure_scores
from prunehw.model.network import build_model, weight_counts
from prunehw.model.pruning_schedule import PruningSchedule

NET = NetworkConfig(layers=(L(type="conv2d", filters=8, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                            L(type="conv2d", filters=8, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                            L(type="flatten"), L(type="dense", units=32), L(type="relu"), L(type="dense", units=10)))


@pytest.fixture(scope="module")
def net(tiny_data):
    return build_model(NET, tiny_data.input_shape, 10, seed=2)


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "fisher"])
def test_scores_cover_every_structure(net, tiny_data, criterion):
    geo = geometry(net)
    maps = full_maps(geo)
    cols, rows = structure_scores(net, geo, maps, criterion, tiny_data.x_train[:64], tiny_data.y_train[:64])
    for g, c, r in zip(geo, cols, rows):
        assert c.shape == (g.n_cols,) and r.shape == (g.n_rows,)
        assert np.all(np.isfinite(c)) and np.all(c >= 0) and np.any(c > 0)


def test_l1_scores_are_column_and_row_norms(net, tiny_data):
    geo = geometry(net)
    cols, rows = structure_scores(net, geo, full_maps(geo), "l1", tiny_data.x_train[:8], tiny_data.y_train[:8])
    k = net.layers[0].kernel.numpy().reshape(9, 8)
    np.testing.assert_allclose(cols[0], np.abs(k).sum(0), rtol=1e-6)
    np.testing.assert_allclose(rows[0], np.abs(k).sum(1), rtol=1e-6)


@pytest.mark.parametrize("criterion", ["l2", "taylor"])
def test_prune_matrix_reaches_ratio_with_full_tiles(net, tiny_data, criterion):
    total, _ = weight_counts(net)
    small, geo, maps = prune_matrix(net, tiny_data, PruningSchedule("iterative", 0.6, 2, 1), criterion=criterion,
                                    array=ArrayConfig(rows=4, cols=4), learning_rate=1e-3, batch_size=64,
                                    calibration=64, seed=0)
    _, kept = weight_counts(small)
    assert kept == sum(len(m.rows) * len(m.cols) for m in maps)
    assert 1 - kept / total >= 0.6
    assert [len(m.cols) % 4 for m in maps[:-1]] == [0] * (len(maps) - 1)
    assert small.layers[0].filters == len(maps[0].cols), "the model is physically smaller"


def test_prune_matrix_keeps_strides_and_same_padding(tiny_data):
    """Pruning a network with same padding and stride 2 keeps both in the smaller model (its matrices are the
    same shape of rows; only the maps' positions per channel change: 7x7 after the strided conv and the pool)."""
    strided = NetworkConfig(layers=(L(type="conv2d", filters=8, kernel=3, stride=2, padding="same"), L(type="relu"),
                                    L(type="conv2d", filters=8, kernel=2, padding="same"), L(type="relu"),
                                    L(type="maxpool2d", pool=2), L(type="flatten"), L(type="dense", units=10)))
    model = build_model(strided, tiny_data.input_shape, 10, seed=2)
    small, geo, maps = prune_matrix(model, tiny_data, PruningSchedule("iterative", 0.5, 2, 1), criterion="taylor",
                                    array=ArrayConfig(rows=4, cols=4), learning_rate=1e-3, batch_size=64,
                                    calibration=64, seed=0)
    assert geo[-1].n_pos == 7 * 7
    convs = [(tuple(l.strides), l.padding) for l in small.layers if "conv" in l.name]
    assert convs == [((2, 2), "same"), ((1, 1), "same")]
    assert tuple(small.layers[-2].output.shape[1:]) == (7 * 7 * len(maps[1].cols),)


def test_cost_counts_meet_the_target_tile_by_tile(net, tiny_data):
    """The greedy stops at the first counts within the target, removing whole tiles, and never keeps less than a
    tile of a layer; a target nothing can reach leaves it where nothing more can go."""
    from prunehw.model.matrix_prune import cost_counts

    geo = geometry(net)
    maps = full_maps(geo)
    cols, rows = structure_scores(net, geo, maps, "l1", tiny_data.x_train[:8], tiny_data.y_train[:8])
    array = ArrayConfig(rows=4, cols=4)
    # a made-up cost: each layer's folds times its (fixed) positions, as the accelerator's cycle model counts
    positions = [26 * 26, 11 * 11, 1, 1]

    def cost(counts):
        return sum(-(-r // 4) * -(-c // 4) * m for (r, c), m in zip(counts, positions))

    full = cost([(len(m.rows), len(m.cols)) for m in maps])
    counts, reached = cost_counts(geo, maps, cols, rows, array, cost, 0.5 * full)
    assert reached == cost(counts) <= 0.5 * full
    assert all(c % 4 == 0 and c >= 4 for _, c in counts[:-1]) and counts[-1][1] == 10
    floor, low = cost_counts(geo, maps, cols, rows, array, cost, 1)
    assert low > 1 and all(c == 4 for _, c in floor[:-1])


def test_prune_to_a_cycle_target_meets_it_in_the_cycle_model(net, tiny_data):
    """Pruning to a cycle target with the accelerator's exact cycle model as the cost: the pruned model's program
    takes at most the target, as the cycle model of the generated accelerator counts it."""
    from prunehw.core.config import RunConfig
    from prunehw.export.contract import Contract
    from prunehw.export.quantize import quantize
    from prunehw.hw.models.cycle_model import cycle_model
    from prunehw.hw.generate import program_for
    from prunehw.model.matrix_form import kept_small_rows
    from prunehw.variants import cycle_cost

    array = ArrayConfig(rows=4, cols=4)
    cfg = RunConfig(array=array)
    cost = cycle_cost(net, tiny_data, cfg)
    dense = cycle_model(program_for(Contract(*quantize(net, tiny_data.x_train[:32])), array)).total
    assert cost([(g.n_rows, g.n_cols) for g in geometry(net)]) == dense
    target = int(0.4 * dense)
    small, geo, maps = prune_matrix(net, tiny_data, PruningSchedule("iterative", 0.5, 2, 1), criterion="l1",
                                    array=array, learning_rate=1e-3, batch_size=64, calibration=64, seed=0,
                                    cost=cost, target=target)
    program = program_for(Contract(*quantize(small, tiny_data.x_train[:32], rows_kept=kept_small_rows(geo, maps))), array)
    assert cycle_model(program).total == cost([(len(m.rows), len(m.cols)) for m in maps]) <= target


def test_energy_cost_is_the_activity_model_of_the_kept_tiles(net, tiny_data):
    """The energy cost of the search: for the unpruned counts, the energy of the generated program's activity
    model; for a pruned model, every counter of the cut program equals the pruned program's own (the multiplies
    split differently between done and gated: the cut keeps the unpruned weights of the first rows and columns)
    and its memories are priced at the pruned design's sizes."""
    import dataclasses

    from prunehw.core.config import RunConfig
    from prunehw.export.contract import Contract
    from prunehw.export.quantize import quantize
    from prunehw.hw.models.cycle_model import activity_model
    from prunehw.hw.generate import describe, program_for
    from prunehw.model.matrix_form import kept_small_rows
    from prunehw.hw.models.energy import energy, load_energy_table
    from prunehw.hw.models.cost import recount
    from prunehw.variants import energy_cost

    array = ArrayConfig(rows=4, cols=4)
    cfg = RunConfig(array=array)
    program = program_for(Contract(*quantize(net, tiny_data.x_train[:32])), array)
    full = [(g.n_rows, g.n_cols) for g in geometry(net)]
    assert energy_cost(net, tiny_data, cfg)(full) == pytest.approx(
        energy(activity_model(program), describe(program), load_energy_table())["total"], rel=1e-12)
    small, geo, maps = prune_matrix(net, tiny_data, PruningSchedule("iterative", 0.6, 1, 1), criterion="l1",
                                    array=array, learning_rate=1e-3, batch_size=64, calibration=64, seed=0)
    pruned = program_for(Contract(*quantize(small, tiny_data.x_train[:32], rows_kept=kept_small_rows(geo, maps))), array)
    cut = activity_model(dataclasses.replace(program, ops=recount(program, [(len(m.rows), len(m.cols)) for m in maps])))
    real = activity_model(pruned)
    assert {k: v for k, v in cut.items() if not k.startswith("mults")} == \
        {k: v for k, v in real.items() if not k.startswith("mults")}
    assert cut["mults"] + cut["mults_gated"] == real["mults"] + real["mults_gated"]
    # and the memories it prices are the pruned design's: with the cut's multiplies and the unpruned design's
    # widths (the pruned network's quantization may narrow the accumulators, its smaller buffers the row table's
    # addresses), the same energy
    kept = [(len(m.rows), len(m.cols)) for m in maps]
    want, was = describe(pruned), describe(program)
    want["array"]["acc_bits"] = was["array"]["acc_bits"]
    for m in ("psum", "bias", "row_table"):
        want["memories"][m]["bits_per_word"] = was["memories"][m]["bits_per_word"]
    assert energy_cost(net, tiny_data, cfg)(kept) == pytest.approx(energy(
        {**real, "mults": cut["mults"], "mults_gated": cut["mults_gated"]}, want, load_energy_table())["total"], rel=1e-12)


def test_energy_cost_counts_the_copies_a_cut_convolution_reads(net, tiny_data):
    """A convolution's row tile dropped (rows below its taps times its input channels): the kept rows of one tile
    come from several taps, so the pruned design keeps that input buffer in R copies; the cut program's counters
    say the same."""
    import dataclasses

    from prunehw.export.contract import Contract
    from prunehw.export.quantize import quantize
    from prunehw.hw.models.cycle_model import activity_model
    from prunehw.hw.generate import program_for
    from prunehw.model.matrix_form import kept_small_rows, matrices, shrink
    from prunehw.model.matrix_prune import select
    from prunehw.hw.models.cost import recount

    array = ArrayConfig(rows=4, cols=4)
    geo = geometry(net)
    rng = np.random.default_rng(5)
    cols = [rng.random(g.n_cols) for g in geo]
    rows = [rng.random(g.n_rows) for g in geo]
    counts = [(9, 8), (68, 8), (geo[2].n_rows, 32), (32, 10)]      # conv2: 72 rows less one row tile
    maps = select(geo, full_maps(geo), cols, rows, counts)
    small = shrink(matrices(net), geo, maps, net, 0)
    pruned = program_for(Contract(*quantize(small, tiny_data.x_train[:32], rows_kept=kept_small_rows(geo, maps))), array)
    program = program_for(Contract(*quantize(net, tiny_data.x_train[:32])), array)
    cut = activity_model(dataclasses.replace(program, ops=recount(program, counts)))
    real = activity_model(pruned)
    assert pruned.copies[0] == 4
    assert {k: v for k, v in cut.items() if not k.startswith("mults")} == \
        {k: v for k, v in real.items() if not k.startswith("mults")}


def test_prune_matrix_prunes_a_depthwise_layer_with_its_source(tiny_data):
    """A depthwise-separable network: each depthwise layer keeps exactly the channels the convolution before it
    keeps (one dependency group), its taps all; the pointwise layer after it reads those channels."""
    separable = NetworkConfig(layers=(
        L(type="conv2d", filters=16, kernel=3, stride=2, padding="same"), L(type="relu"),
        L(type="depthwise2d", kernel=3, padding="same"), L(type="relu"), L(type="conv2d", filters=16, kernel=1),
        L(type="relu"), L(type="depthwise2d", kernel=3, stride=2, padding="same"), L(type="relu"),
        L(type="avgpool2d", pool=7), L(type="flatten"), L(type="dense", units=10)))
    model = build_model(separable, tiny_data.input_shape, 10, seed=2)
    total, _ = weight_counts(model)
    small, geo, maps = prune_matrix(model, tiny_data, PruningSchedule("iterative", 0.5, 2, 1), criterion="taylor",
                                    array=ArrayConfig(rows=4, cols=4), learning_rate=1e-3, batch_size=64,
                                    calibration=64, seed=0)
    kinds = [g.kind for g in geo]
    assert kinds == ["conv2d", "depthwise2d", "conv2d", "depthwise2d", "dense"]
    for i in (1, 3):
        np.testing.assert_array_equal(maps[i].cols, maps[i - 1].cols)
        assert len(maps[i].rows) == 9
    _, kept = weight_counts(small)
    assert kept == sum(len(m.rows) * len(m.cols) for m in maps) and 1 - kept / total >= 0.45
    dws = [l for l in small.layers if type(l).__name__ == "DepthwiseConv2D"]
    assert [l.kernel.shape[2] for l in dws] == [len(maps[0].cols), len(maps[2].cols)] and len(maps[0].cols) < 16
    assert [(tuple(l.strides), l.padding) for l in dws] == [((1, 1), "same"), ((2, 2), "same")]
