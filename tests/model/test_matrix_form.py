"""The physically smaller model computes what the original computes with the pruned rows/columns zeroed."""

import numpy as np
import pytest

from prunehw.core.config import ArrayConfig, LayerSpec as L, NetworkConfig
from prunehw.model.matrix_form import expand, full_maps, geometry, matrices, shrink, zeroed_original
from prunehw.model.matrix_prune import select, target_counts
from prunehw.model.network import build_model

NETS = {
    # conv -> pool -> conv -> pool -> flatten -> dense: channels pruned across pooling and flatten
    "cnn": ((28, 28, 1), (L(type="conv2d", filters=8, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                          L(type="conv2d", filters=12, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                          L(type="flatten"), L(type="dense", units=24), L(type="relu"), L(type="dense", units=10))),
    # conv straight into flatten (no pooling), multi-channel input
    "conv_flatten": ((10, 10, 3), (L(type="conv2d", filters=6, kernel=3), L(type="relu"), L(type="flatten"),
                                   L(type="dense", units=16), L(type="relu"), L(type="dense", units=10))),
    # same padding and stride 2 (odd sizes: padding more at the bottom/right), three input channels
    "strided": ((11, 11, 3), (L(type="conv2d", filters=6, kernel=3, padding="same"), L(type="relu"),
                              L(type="conv2d", filters=8, kernel=3, stride=2, padding="same"), L(type="relu"),
                              L(type="conv2d", filters=8, kernel=2, stride=2), L(type="relu"),
                              L(type="flatten"), L(type="dense", units=16), L(type="relu"), L(type="dense", units=10))),
    # average pooling after a ReLU (13 -> 6: the last row and column dropped) and on signed values, beside a max
    "avgpool": ((13, 13, 2), (L(type="conv2d", filters=6, kernel=3, padding="same"), L(type="relu"),
                              L(type="avgpool2d", pool=2), L(type="conv2d", filters=8, kernel=3),
                              L(type="avgpool2d", pool=2), L(type="maxpool2d", pool=1), L(type="flatten"),
                              L(type="dense", units=16), L(type="relu"), L(type="dense", units=10))),
    # depthwise-separable (DS-CNN / MobileNet): a depthwise convolution's channels are its source's filters, pruned
    # with them; a strided depthwise, then a pointwise one reading the kept channels
    "separable": ((12, 10, 1), (L(type="conv2d", filters=8, kernel=[4, 3], stride=2, padding="same"), L(type="relu"),
                                L(type="depthwise2d", kernel=3, padding="same"), L(type="relu"),
                                L(type="conv2d", filters=12, kernel=1), L(type="relu"),
                                L(type="depthwise2d", kernel=3, stride=2, padding="same"), L(type="relu"),
                                L(type="avgpool2d", pool=[3, 1]), L(type="flatten"), L(type="dense", units=10))),
    # MLP: dense after dense
    "mlp": ((8, 8, 1), (L(type="flatten"), L(type="dense", units=32), L(type="relu"), L(type="dense", units=20),
                        L(type="relu"), L(type="dense", units=10))),
}


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("ratio", [0.3, 0.7])
@pytest.mark.parametrize("array", [None, ArrayConfig(rows=4, cols=4)])
def test_smaller_model_equals_zeroed_original(net, ratio, array, rng):
    shape, layers = NETS[net]
    model = build_model(NetworkConfig(layers=layers), shape, 10, seed=1)
    for layer in model.layers:  # random biases too, so dropped biases would show
        for v in layer.weights:
            v.assign(rng.normal(scale=0.3, size=v.shape).astype(np.float32))
    geo = geometry(model)
    maps = full_maps(geo)
    cols = [rng.random(len(m.cols)) for m in maps]
    rows = [rng.random(len(m.rows)) for m in maps]
    counts = target_counts(geo, maps, ratio, array)
    new = select(geo, maps, cols, rows, counts)
    assert [(len(m.rows), len(m.cols)) for m in new] == counts
    assert len(new[-1].cols) == 10, "the class outputs are never pruned"
    small = shrink(matrices(model), geo, new, model, seed=1)
    ref = zeroed_original(model, geo, new)
    x = rng.integers(0, 256, size=(16, *shape)).astype(np.float32) / 256
    np.testing.assert_allclose(small.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    for g, m in zip(geo, new):
        if g.follows:        # (a depthwise layer keeps its source's channels and all its taps)
            np.testing.assert_array_equal(m.cols, new[g.src].cols)
            assert len(m.rows) == g.n_rows
    kept = sum(len(m.rows) * len(m.cols) for m in new)
    assert sum(int(np.count_nonzero(w)) for _, w, _ in matrices(small)) == kept
    # expand() is shrink()'s inverse on the kept entries
    for (_, w, b), (_, wz, bz) in zip(expand(small, geo, new), matrices(ref)):
        np.testing.assert_array_equal(w, wz)
        np.testing.assert_array_equal(b, bz)


def test_tile_aware_counts_fill_whole_tiles():
    shape, layers = NETS["cnn"]
    model = build_model(NetworkConfig(layers=layers), shape, 10, seed=1)
    geo = geometry(model)
    array = ArrayConfig(rows=4, cols=4)
    counts = target_counts(geo, full_maps(geo), 0.6, array)
    for (r, c), g in zip(counts[:-1], geo[:-1]):
        assert c % 4 == 0
    for (r, c), g in zip(counts, geo):
        assert r % 4 == 0 or r == g.n_rows
    total = sum(g.n_rows * g.n_cols for g in geo)
    assert 1 - sum(r * c for r, c in counts) / total >= 0.6


def test_geometry_of_default_network():
    from prunehw.core.config import NetworkConfig as N

    model = build_model(N(), (28, 28, 1), 10, seed=1)
    geo = geometry(model)
    assert [(g.n_rows, g.n_cols, g.c_in, g.n_pos, g.src) for g in geo] == [
        (9, 16, 1, 9, None), (144, 32, 16, 9, 0), (800, 128, 32, 25, 1), (128, 10, 128, 1, 2)]


def test_geometry_and_spec_of_a_strided_padded_network():
    """11x11 -> same, stride 1: 11x11 -> same, stride 2: 6x6 -> valid k2 stride 2: 3x3 -> flatten: 9 positions."""
    from prunehw.model.matrix_form import network_spec

    shape, layers = NETS["strided"]
    net = NetworkConfig(layers=layers)
    model = build_model(net, shape, 10, seed=1)
    assert [tuple(l.output.shape[1:]) for l in model.layers if "conv" in l.name] == [(11, 11, 6), (6, 6, 8), (3, 3, 8)]
    geo = geometry(model)
    assert [(g.n_rows, g.n_cols, g.c_in, g.n_pos, g.src) for g in geo] == [
        (27, 6, 3, 9, None), (54, 8, 6, 9, 0), (32, 8, 8, 4, 1), (72, 16, 8, 9, 2), (16, 10, 16, 1, 3)]
    spec = network_spec(model)
    assert [(s.stride, s.padding) for s in spec.layers if s.type == "conv2d"] == [(1, "same"), (2, "same"), (2, "valid")]
    assert spec.to_dict() == NetworkConfig(layers=tuple(l.replace(name=n) for l, n in
                                                        zip(layers, [m.name for m in model.layers]))).to_dict()


def test_geometry_and_spec_of_a_network_with_average_pooling():
    """13x13 -> same: 13x13 -> avg 2: 6x6 -> valid k3: 4x4 -> avg 2: 2x2 -> (max 1) -> flatten: 4 positions; the
    spec read back from the Keras model is the config's, average and max poolings told apart."""
    import keras

    from prunehw.model.matrix_form import network_spec

    shape, layers = NETS["avgpool"]
    model = build_model(NetworkConfig(layers=layers), shape, 10, seed=1)
    pools = [l for l in model.layers if "pool" in l.name]
    assert [(type(l).__name__, tuple(l.output.shape[1:])) for l in pools] == [
        ("AveragePooling2D", (6, 6, 6)), ("AveragePooling2D", (2, 2, 8)), ("MaxPooling2D", (2, 2, 8))]
    assert [l.name for l in pools] == ["avgpool1", "avgpool2", "pool1"]
    geo = geometry(model)
    assert [(g.n_rows, g.n_cols, g.c_in, g.n_pos, g.src) for g in geo] == [
        (18, 6, 2, 9, None), (54, 8, 6, 9, 0), (32, 16, 8, 4, 1), (16, 10, 16, 1, 2)]
    spec = network_spec(model)
    assert spec.to_dict() == NetworkConfig(layers=tuple(l.replace(name=n) for l, n in
                                                        zip(layers, [m.name for m in model.layers]))).to_dict()
    assert isinstance(build_model(spec, shape, 10, seed=1).layers[2], keras.layers.AveragePooling2D)


@pytest.mark.parametrize("net", ["cnn", "strided", "avgpool"])
def test_sparse_forward_equals_the_keras_model(net, rng):
    """The sparse-format inference path (the timing experiments') extracts patches as Keras pads and strides."""
    from prunehw.model.inference import sparse_forward

    shape, layers = NETS[net]
    model = build_model(NetworkConfig(layers=layers), shape, 10, seed=1)
    x = rng.uniform(0, 1, (4, *shape)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(sparse_forward(model)(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)
