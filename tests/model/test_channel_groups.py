"""Matrix pruning of a network that is not a chain: the channels joined by residual Adds and depthwise
convolutions found as dependency groups and removed together, the smaller model computing exactly what the full
one computes with those channels zeroed."""

import keras
import numpy as np
import pytest

from prunehw.core.config import ArrayConfig
from prunehw.export.contract import Contract
from prunehw.export.quantize import quantize
from prunehw.hw.generate import program_for
from prunehw.model.channel_groups import (channel_groups, group_weights, prune_groups, select_channels, shrink_groups,
                                          tile_rows, zero_groups)
from prunehw.model.network import weight_counts
from prunehw.model.pruning_schedule import PruningSchedule


def _resnet(seed=0):
    """stem conv; an identity block (two convs, Add with the stem's output); a downsampling block (strided conv,
    conv, Add with a 1x1 stride-2 shortcut conv); a depthwise layer; average pooling, Flatten, Dense."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = keras.Input((12, 12, 1))
    y = L.ReLU()(L.Conv2D(8, 3, padding="same", name="stem")(x))
    a = L.ReLU()(L.Conv2D(8, 3, padding="same", name="b1c1")(y))
    y = L.ReLU(name="r1")(L.Add(name="add1")([L.Conv2D(8, 3, padding="same", name="b1c2")(a), y]))
    a = L.ReLU()(L.Conv2D(16, 3, strides=2, padding="same", name="b2c1")(y))
    s = L.Conv2D(16, 1, strides=2, name="b2sc")(y)
    y = L.ReLU(name="r2")(L.Add(name="add2")([L.Conv2D(16, 3, padding="same", name="b2c2")(a), s]))
    y = L.ReLU()(L.DepthwiseConv2D(3, padding="same", name="dw")(y))
    out = L.Dense(10, name="logits")(L.Flatten()(L.AveragePooling2D(3)(y)))
    model = keras.Model(x, out)
    rng = np.random.default_rng(seed)
    for layer in model.layers:           # (random biases too, so a bias left on a removed channel would show)
        for v in layer.weights:
            v.assign(rng.normal(scale=0.3, size=v.shape).astype(np.float32))
    return model


def test_the_groups_follow_the_adds_and_the_depthwise_layer():
    groups, layer_in, layer_out = channel_groups(_resnet())
    # the stem, the identity block's second conv: one group (add1), read by add1's readers
    assert layer_out["stem"] == layer_out["b1c2"] and layer_in["b1c1"] == layer_in["b2c1"] == layer_out["stem"]
    # the downsampling block's conv and its shortcut: one group, the depthwise layer's channels, the dense's rows
    g = groups[layer_out["b2c2"]]
    assert layer_out["b2sc"] == layer_out["b2c2"] and sorted(g.producers) == ["b2c2", "b2sc"] and g.followers == ["dw"]
    assert layer_in["logits"] == layer_out["b2c2"] and ("logits", 4) in g.readers   # (2x2 positions after the pooling)
    # the blocks' first convs start groups of their own; the input and the logits are never pruned
    assert layer_out["b1c1"] not in (layer_out["stem"], layer_out["b2c2"])
    assert [grp.prunable for grp in groups].count(False) == 2
    assert not groups[layer_in["stem"]].prunable and not groups[layer_out["logits"]].prunable
    total, _ = weight_counts(_resnet())
    assert group_weights(_resnet(), groups, layer_in, layer_out, [grp.size for grp in groups]) == total


@pytest.mark.parametrize("ratio, array", [(0.5, None), (0.5, ArrayConfig(rows=4, cols=4)), (0.8, None)])
def test_the_smaller_model_computes_what_the_zeroed_one_does(ratio, array):
    model = _resnet()
    groups, layer_in, layer_out = channel_groups(model)
    keep = select_channels(model, groups, layer_in, layer_out, ratio, array)
    small = shrink_groups(model, groups, layer_in, layer_out, keep)
    ref = zero_groups(model, groups, layer_out, keep)
    x = np.random.default_rng(1).random((8, 12, 12, 1), dtype=np.float32)
    np.testing.assert_allclose(small.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    total, _ = weight_counts(model)
    kept, _ = weight_counts(small)
    assert 1 - kept / total >= ratio and kept == group_weights(model, groups, layer_in, layer_out, [len(k) for k in keep])
    layers = {l.name: l for l in small.layers}
    # the coupled layers agree: both producers of add2's group, and the depthwise layer, keep its channels
    n = len(keep[layer_out["b2c2"]])
    assert layers["b2c2"].filters == layers["b2sc"].filters == layers["dw"].kernel.shape[2] == n < 16
    if array is not None:
        assert all(len(k) % 4 == 0 for k, g in zip(keep, groups) if g.prunable)


def test_prune_groups_fine_tunes_the_smaller_model(tiny_data):
    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((28, 28, 1))
    y = L.ReLU()(L.Conv2D(8, 3, strides=2, padding="same")(x))
    y = L.ReLU()(L.Add()([L.Conv2D(8, 3, padding="same")(L.ReLU()(L.Conv2D(8, 3, padding="same")(y))), y]))
    model = keras.Model(x, L.Dense(10)(L.Flatten()(L.MaxPooling2D(2)(y))))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    small, record = prune_groups(model, tiny_data, PruningSchedule("iterative", 0.5, 2, 1), criterion="l1",
                                 array=ArrayConfig(rows=4, cols=4), learning_rate=1e-3, batch_size=64)
    total, _ = weight_counts(model)
    kept, _ = weight_counts(small)
    assert 1 - kept / total >= 0.5
    assert [len(g["kept"]) for g in record["groups"] if g["prunable"]] == [4, 4]
    assert not isinstance(small, keras.Sequential) and any(type(l).__name__ == "Add" for l in small.layers)
    # rows: the stem's 9 taps of the image's one channel fill 3 row tiles of 4, the last with one; its weakest tap
    # goes (the others have 4 channels' taps, whole tiles) and stays zero through the fine-tuning
    stem = small.layers[1]
    assert list(record["rows_kept"]) == [stem.name] and len(record["rows_kept"][stem.name]) == 8
    w = stem.kernel.numpy().reshape(9, -1)
    dropped = sorted(set(range(9)) - set(record["rows_kept"][stem.name]))
    assert len(dropped) == 1 and not w[dropped].any() and np.all(np.abs(w[record["rows_kept"][stem.name]]).sum(1) > 0)
    # the contract records them and the accelerator's program skips the dropped tap: 2 row tiles, not 3
    contract = Contract(*quantize(small, tiny_data.x_train[:32], rows_kept=record["rows_kept"]))
    assert contract.weighted()[0]["rows_kept"] == record["rows_kept"][stem.name]
    op = program_for(contract, ArrayConfig(rows=4, cols=4)).ops[0]
    assert (op.name, op.rows, op.n_rt) == (stem.name, 8, 2)


def test_tile_rows_keeps_the_strongest_rows_of_each_partial_tile_only():
    model = _resnet()
    before = {l.name: l.kernel.numpy().copy() for l in model.layers if hasattr(l, "kernel")}
    kept = tile_rows(model, 4, "l2")
    # on 4 rows: only the stem (9 rows); the 1x1 shortcut reads 8 channels (8 rows), the 3x3 convs 8 or 16 (72,
    # 144 rows), the logits 64; the depthwise layer is mapped by channel and left alone
    assert list(kept) == ["stem"] and len(kept["stem"]) == 8
    norms = np.sqrt(np.square(before["stem"].reshape(9, -1)).sum(1))
    assert int(np.argmin(norms)) not in kept["stem"]
    after = {l.name: l.kernel.numpy() for l in model.layers if hasattr(l, "kernel")}
    assert all(np.array_equal(after[n], before[n]) for n in before if n != "stem")
    assert not after["stem"].reshape(9, -1)[int(np.argmin(norms))].any()
    # on 8 rows only the stem again (the logits read 2x2 positions of 16 channels: 64 rows)
    assert [(n, len(r)) for n, r in tile_rows(_resnet(), 8, "l1").items()] == [("stem", 8)]
