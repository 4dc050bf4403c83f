"""A user's Keras model rewritten into the supported layers computes the same function (float, to rounding)."""

import keras
import numpy as np
import pytest

from prunehw.core.errors import ModelFileError
from prunehw.model.network import check_supported
from prunehw.model.user_model import import_user_model, normalize, verify


def _models():
    L = keras.layers
    fused = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(8, 5, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                              L.Dropout(0.3), L.Dense(32, activation="relu"), L.Dense(10, activation="softmax")])
    bn = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(6, 3), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(),
                           L.Conv2D(8, 3, use_bias=False), L.BatchNormalization(), L.Activation("relu"), L.Flatten(),
                           L.Dense(10), L.Activation("softmax")])
    mlp = keras.Sequential([keras.Input((28, 28, 1)), L.Flatten(), L.Dense(24), L.BatchNormalization(scale=False),
                            L.ReLU(), L.Dense(10, activation="linear")])
    # same padding and strides (once formerly refused): carried into the rewritten model, batch norm still folded
    same = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(4, 3, padding="same"), L.Flatten(), L.Dense(10)])
    strided = keras.Sequential([keras.Input((27, 27, 3)), L.Conv2D(6, 3, padding="same", use_bias=False),
                                L.BatchNormalization(), L.ReLU(), L.Conv2D(8, 3, strides=2, activation="relu"),
                                L.Conv2D(8, 2, strides=(2, 2), padding="same", activation="relu"), L.MaxPooling2D(),
                                L.Flatten(), L.Dense(10, activation="softmax")])
    # average pooling (formerly refused), after a ReLU and on signed values (batch norm folded), windows 2 and 4
    average = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(6, 3, activation="relu"), L.AveragePooling2D(2),
                                L.Conv2D(8, 3), L.BatchNormalization(), L.AveragePooling2D(4), L.Flatten(),
                                L.Dense(10, activation="softmax")])
    # relu6 in its three spellings (fused, a capped ReLU layer, an Activation), the weights scaled so the cap acts
    relu6 = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(6, 3, activation="relu6"), L.MaxPooling2D(),
                              L.Conv2D(8, 3), L.ReLU(max_value=6), L.Conv2D(8, 3), L.Activation("relu6"), L.Flatten(),
                              L.Dense(10)])
    for layer in relu6.layers:
        if isinstance(layer, L.Conv2D):
            layer.kernel.assign(layer.kernel * 30.0)
    # non-square kernels (a keyword-spotting front end's (10, 4) with stride 2, same padding; batch norm folded) and
    # non-square strides (1, 2)
    nonsquare = keras.Sequential([keras.Input((49, 10, 1)), L.Conv2D(8, (10, 4), strides=2, padding="same", use_bias=False),
                                  L.BatchNormalization(), L.ReLU(), L.Conv2D(8, (1, 3), strides=(1, 2)), L.Flatten(),
                                  L.Dense(12)])
    # poolings of any window: a 3x3 average, a 2x3 maximum, a global average (a 3x3 map: then flattened)
    pooling = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(6, 3, activation="relu"), L.AveragePooling2D(3),
                                L.Conv2D(8, 3), L.MaxPooling2D((2, 3)), L.GlobalAveragePooling2D(), L.Dense(10)])
    return {"fused": fused, "batchnorm": bn, "mlp": mlp, "same": same, "strided": strided, "average": average,
            "relu6": relu6, "nonsquare": nonsquare, "pooling": pooling}


_ENDS_IN_SOFTMAX = ("fused", "batchnorm", "strided", "average")


@pytest.mark.parametrize("name", ["fused", "batchnorm", "mlp", "same", "strided", "average", "relu6", "nonsquare",
                                  "pooling"])
def test_normalized_model_computes_the_same_logits(name):
    model = _models()[name]
    rng = np.random.default_rng(0)
    _randomize_batch_norm(model, rng)
    x = rng.uniform(0, 1, (16, *model.inputs[0].shape[1:])).astype(np.float32)
    out, notes = normalize(model)
    check_supported(out, name)
    want = model(x, training=False).numpy()
    got = out(x, training=False).numpy()
    if name in _ENDS_IN_SOFTMAX:      # (compare with the logits' softmax, and the argmax)
        got_p = keras.ops.softmax(got).numpy()
        np.testing.assert_allclose(got_p, want, rtol=1e-4, atol=1e-6)
        assert any("softmax dropped" in n for n in notes)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert (got.argmax(1) == want.argmax(1)).all()
    if name == "batchnorm":
        assert sum("folded" in n for n in notes) == 2
    if name == "relu6":      # every spelling became a ReLU capped at 6, and the cap acts on these inputs
        assert [l.max_value for l in out.layers if isinstance(l, keras.layers.ReLU)] == [6.0, 6.0, 6.0]
        first = keras.Sequential(out.layers[:2])(x).numpy()
        assert first.max() == 6.0 and (first == 6.0).mean() > 0.01
    convs = [(tuple(l.kernel_size), tuple(l.strides), l.padding) for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(tuple(l.kernel_size), tuple(l.strides), l.padding) for l in out.layers
            if isinstance(l, keras.layers.Conv2D)] == convs
    pooling = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    pools = [(type(l).__name__, tuple(l.pool_size)) for l in model.layers if isinstance(l, pooling)]
    if name == "pooling":   # (the global average: an average over the whole 3x2 map, then a Flatten)
        pools.append(("AveragePooling2D", (3, 2)))
        assert any("GlobalAveragePooling2D as a 3x2 avgpool2d over the whole map, then a Flatten" in n for n in notes)
    assert [(type(l).__name__, tuple(l.pool_size)) for l in out.layers if isinstance(l, pooling)] == pools


@pytest.mark.parametrize("layers, match", [
    (lambda L: [L.Conv2D(4, 3, dilation_rate=2, padding="same"), L.Flatten(), L.Dense(10)],
     r"conv layer 'conv2d\w*' uses dilation_rate \(2, 2\); supported: .*dilation 1"),
    (lambda L: [L.Conv2D(4, 3, activation="tanh"), L.Flatten(), L.Dense(10)], "fuses activation 'tanh'"),
    (lambda L: [L.BatchNormalization(), L.Flatten(), L.Dense(10)], "does not follow a Conv2D, DepthwiseConv2D or Dense"),
    (lambda L: [L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(), L.Flatten(), L.Dense(10)],
     "does not follow a Conv2D, DepthwiseConv2D or Dense"),
    (lambda L: [L.Conv2D(4, 3), L.AveragePooling2D(2, strides=1), L.Flatten(), L.Dense(10)],
     r"AveragePooling2D 'average_pooling2d\w*' is \(2, 2\) with strides \(1, 1\); supported: strides equal to the "
     r"window, padding valid$"),
    (lambda L: [L.Conv2D(4, 3), L.Reshape((26 * 26, 4)), L.GlobalAveragePooling1D(), L.Dense(10)],
     "unsupported type Reshape"),
    (lambda L: [L.Conv2D(4, 3), L.AveragePooling2D(2, padding="same"), L.Flatten(), L.Dense(10)],
     r"AveragePooling2D 'average_pooling2d\w*' uses padding 'same'; supported: .*padding valid"),
    (lambda L: [L.Flatten(), L.Dense(10, activation="softmax"), L.Dense(10)], "fuses activation 'softmax'"),
    (lambda L: [L.Conv2D(4, 3), L.ReLU(max_value=4), L.Flatten(), L.Dense(10)],
     r"ReLU 're_lu\w*' has max_value=4, negative_slope=0.0, threshold=0.0; supported: ReLU\(\) and ReLU\(max_value=6\)"),
    (lambda L: [L.Conv2D(4, 3), L.ReLU(negative_slope=0.1), L.Flatten(), L.Dense(10)], "negative_slope=0.1"),
])
def test_unsupported_layers_are_refused_in_one_line(layers, match):
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers(keras.layers)])
    with pytest.raises(ModelFileError, match=match) as err:
        normalize(model, "user.keras")
    assert "\n" not in str(err.value)


def _randomize_batch_norm(model, rng):
    """Batch normalization that does something (its defaults are the identity), so folding it is tested."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for w in layer.get_weights()])


def _two_heads():
    """Two outputs off one Dense: once accepted as the chain flatten, a, head_b, head_c."""
    L = keras.layers
    x = keras.Input((8, 8, 1))
    a = L.Dense(6, name="a")(L.Flatten()(x))
    return keras.Model(x, [L.Dense(3, name="head_b")(a), L.Dense(3, name="head_c")(a)])


def _shared_conv():
    """One Conv2D called twice (filters == input channels): once rewritten with the layer applied once."""
    L = keras.layers
    x = keras.Input((8, 8, 2))
    conv = L.Conv2D(2, 3, padding="same", name="conv")
    return keras.Model(x, L.Dense(3)(L.Flatten()(conv(conv(x)))))


def _merge(join):
    L = keras.layers
    x = keras.Input((8, 8, 1))
    y = join([L.Conv2D(2, 3, name="left")(x), L.Conv2D(2, 3, name="right")(x)])
    return keras.Model(x, L.Dense(3)(L.Flatten()(y)))


def _merge3(join):
    L = keras.layers
    x = keras.Input((8, 8, 1))
    y = join([L.Conv2D(2, 3, name=f"c{i}")(x) for i in range(3)])
    return keras.Model(x, L.Dense(3)(L.Flatten()(y)))


def _bn_beside_add():
    L = keras.layers
    x = keras.Input((8, 8, 2))
    c = L.Conv2D(2, 3, padding="same", name="conv")(x)
    y = L.Add()([L.BatchNormalization(name="bn")(c), c])
    return keras.Model(x, L.Dense(3)(L.Flatten()(y)))


def _residual():
    """A ResNet-style block: conv + batch norm + ReLU, conv + batch norm, a 1x1 stride-2 shortcut, Add, ReLU;
    then global average pooling and a softmax head."""
    L = keras.layers
    x = keras.Input((12, 12, 3))
    y = L.ReLU()(L.BatchNormalization(name="bn0")(L.Conv2D(4, 3, padding="same", name="stem")(x)))
    a = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(8, 3, strides=2, padding="same", name="c1")(y)))
    a = L.BatchNormalization(name="bn2")(L.Conv2D(8, 3, padding="same", name="c2")(a))
    s = L.Conv2D(8, 1, strides=2, name="shortcut")(y)
    y = L.Activation("relu")(L.Add(name="add")([a, s]))
    return keras.Model(x, L.Dense(5, activation="softmax")(L.GlobalAveragePooling2D()(y)))


def _separable():
    """A DS-CNN / MobileNet-style stack: conv, depthwise 3x3 + batch norm + ReLU6, pointwise + batch norm + ReLU,
    a strided depthwise with a fused ReLU, Dropout, average pooling, dense."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((14, 10, 1)), L.Conv2D(8, (5, 4), strides=2, padding="same", use_bias=False), L.BatchNormalization(),
        L.ReLU(), L.DepthwiseConv2D(3, padding="same", name="dw1"), L.BatchNormalization(name="bn_dw1"),
        L.ReLU(max_value=6), L.Conv2D(8, 1), L.BatchNormalization(), L.ReLU(),
        L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu", use_bias=False), L.Dropout(0.3),
        L.AveragePooling2D((4, 3)), L.Flatten(), L.Dense(4)])


@pytest.mark.parametrize("build", [_residual, _separable])
def test_residual_and_separable_models_are_imported_and_verified(build):
    model = build()
    rng = np.random.default_rng(0)
    _randomize_batch_norm(model, rng)
    images = rng.integers(0, 256, (8, *model.inputs[0].shape[1:])).astype(np.uint8)
    out, notes = normalize(model, "user.keras")
    assert verify(model, out, images, "user.keras") < 1e-4
    kinds = [type(l).__name__ for l in out.layers]
    assert "BatchNormalization" not in kinds and "Dropout" not in kinds, kinds
    if build is _residual:
        # the graph kept as it is: the add reads the second conv and the shortcut, its ReLU reads the add
        assert isinstance(out, keras.Model) and not isinstance(out, keras.Sequential)
        add = out.get_layer("add")
        assert sorted(t._keras_history.operation.name for t in add.input) == ["c2", "shortcut"]
        assert sum("batch normalization folded" in n for n in notes) == 3 and any("softmax dropped" in n for n in notes)
    else:
        assert isinstance(out, keras.Sequential) and kinds.count("DepthwiseConv2D") == 2
        assert any("bn_dw1: batch normalization folded into 'dw1'" in n for n in notes), notes


def _two_inputs():
    L = keras.layers
    a, b = keras.Input((4,), name="image_a"), keras.Input((4,), name="image_b")
    return keras.Model([a, b], L.Dense(3)(L.Concatenate()([a, b])))


def _nested():
    L = keras.layers
    inner = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3)], name="inner")
    return keras.Sequential([keras.Input((8, 8, 1)), inner, L.Flatten(), L.Dense(3)])


def _ops_call():
    """A keras.ops call between layers: not in ``model.layers``, so once silently left out."""
    L = keras.layers
    x = keras.Input((4,))
    return keras.Model(x, L.Dense(3)(keras.ops.relu(L.Dense(4)(x))))


@pytest.mark.parametrize("build, match", [
    (_two_heads, r"^user.keras: model has 2 outputs \(head_b, head_c\); allowed: one output$"),
    (_shared_conv, r"^user.keras: layer 'conv' is applied 2 times \(shared weights\); allowed: each layer once$"),
    (lambda: _merge(keras.layers.Concatenate(name="cat")), r"^user.keras: layer 'cat' has unsupported type Concatenate; "
                                                            r"supported: Conv2D .*Add \(of 2\)"),
    (lambda: _merge3(keras.layers.Add(name="add3")), r"^user.keras: Add 'add3' sums 3 inputs; supported: Add of 2"),
    # a batch norm after a conv that the residual add also reads: folding it would change the add's input
    (lambda: _bn_beside_add(), r"BatchNormalization 'bn' does not follow a Conv2D, DepthwiseConv2D or Dense that "
                               r"nothing else reads"),
    (lambda: keras.Sequential([keras.Input((8, 8, 2)), keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
                               keras.layers.Flatten(), keras.layers.Dense(3)]),
     r"depthwise conv layer 'dw' uses depth_multiplier=2; supported: depth_multiplier 1"),
    (_two_inputs, r"^user.keras: model has 2 inputs \(image_a, image_b\); allowed: one input$"),
    (_nested, r"layer 'inner' is a nested model \(Sequential\); allowed: its layers, directly in the model"),
    (_ops_call, r"operation 'relu' is a keras.ops call \(Relu\), not a layer; allowed: layers only"),
    (lambda: keras.Sequential([keras.layers.Dense(3)], name="unbuilt"),
     r"model 'unbuilt' has no layer graph \(a subclassed keras.Model, or never built\); allowed: a Sequential or "
     r"functional model with an Input"),
    # a second softmax after the dropped one: softmax(softmax(x)) is not softmax(x)
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax"),
                               keras.layers.Activation("softmax")]), "fuses activation 'softmax'"),
])
def test_a_model_that_is_not_one_chain_is_refused_in_one_line(build, match):
    with pytest.raises(ModelFileError, match=match) as err:
        normalize(build(), "user.keras")
    assert "\n" not in str(err.value)


def test_the_chain_is_taken_in_data_flow_order():
    """Layers created (so listed in ``model.layers``) in another order than they are called."""
    L = keras.layers
    dense, flatten, conv = L.Dense(3, name="dense"), L.Flatten(name="flatten"), L.Conv2D(2, 3, name="conv")
    x = keras.Input((8, 8, 1))
    model = keras.Model(x, dense(flatten(conv(x))))
    out, _ = normalize(model)
    assert [l.name for l in out.layers] == ["conv", "flatten", "dense"]
    assert verify(model, out) < 1e-4


@pytest.mark.parametrize("name", ["fused", "batchnorm", "mlp", "same", "strided", "average"])
def test_every_rewrite_is_verified_on_random_inputs_and_images(name):
    model = _models()[name]
    rng = np.random.default_rng(0)
    _randomize_batch_norm(model, rng)
    images = rng.integers(0, 256, (8, *model.inputs[0].shape[1:])).astype(np.uint8)
    out, _ = normalize(model, name)
    assert verify(model, out, images, name) < 1e-4
    assert verify(model, out, images.astype(np.float32) / 256, name, np.random.default_rng(1)) < 1e-4


def test_a_rewrite_that_computes_another_function_is_refused():
    model = _models()["batchnorm"]
    _randomize_batch_norm(model, np.random.default_rng(0))
    out, _ = normalize(model, "user.keras")
    kernel, bias = out.layers[0].get_weights()
    out.layers[0].set_weights([kernel, bias + 0.5])       # (a batch norm folded wrongly, say)
    with pytest.raises(ModelFileError, match=r"^user.keras: the rewritten model differs from yours by [0-9.e+-]+ at "
                       r"output \d+ on random input \d+ \(tolerance 0.0001 \+ 0.0001\*\|value\|\); refusing a "
                       r"rewrite that does not compute the same function$") as err:
        verify(model, out, where="user.keras")
    assert "\n" not in str(err.value)


def test_verify_catches_the_shared_layer_applied_once():
    """What the rewrite once was (the shared conv applied once): refused by the numbers too, on data images."""
    model = _shared_conv()
    L = keras.layers
    once = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(2, 3, padding="same"), L.Flatten(), L.Dense(3)])
    conv, dense = (l for l in model.layers if isinstance(l, (L.Conv2D, L.Dense)))
    once.layers[0].set_weights(conv.get_weights())
    once.layers[2].set_weights(dense.get_weights())
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 2)).astype(np.uint8)
    with pytest.raises(ModelFileError, match=r"differs from yours by .* on random input \d+"):
        verify(model, once, images, "user.keras")
    with pytest.raises(ModelFileError, match=r"differs from yours by .* on data image \d+"):
        verify(model, once, images, "user.keras", rng=_NoRandom())
    with pytest.raises(ModelFileError, match=r"^user.keras: model input shape \(8, 8, 2\) does not match the data's "
                                             r"images \(8, 8, 1\)$"):
        verify(model, once, images[..., :1], "user.keras")


class _NoRandom:
    """An rng whose random inputs are all zero (where both models agree: biases only), so the images decide."""

    def random(self, shape, dtype):
        return np.zeros(shape, dtype)


def _dataset(shape, n_classes):
    from prunehw.model.data import Dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, *shape)).astype(np.uint8)
    y = np.arange(12) % n_classes
    return Dataset(x[:8], y[:8], x[8:10], y[8:10], x[10:], y[10:], source="test", digest="0")


def test_import_user_model_imports_a_file_as_every_stage_does(tmp_path):
    """Fused relu and softmax (refused by a plain ``load_model``) rewritten, checked and verified; a file that is
    not a chain, or does not fit the data, refused in one line."""
    from prunehw.model.network import load_model

    model = _models()["fused"]
    model.save(tmp_path / "fused.keras")
    with pytest.raises(ModelFileError, match="fuses activation 'relu'; use a separate ReLU layer"):
        load_model(tmp_path / "fused.keras")
    out, notes, diff = import_user_model(tmp_path / "fused.keras", _dataset((28, 28, 1), 10))
    check_supported(out, "fused")
    assert any("softmax dropped" in n for n in notes) and any("fused relu split" in n for n in notes)
    assert 0 <= diff < 1e-4
    with pytest.raises(ModelFileError, match=r"fused.keras: model has 10 outputs but the data set has 4 classes"):
        import_user_model(tmp_path / "fused.keras", _dataset((28, 28, 1), 4))
    _shared_conv().save(tmp_path / "shared.keras")
    with pytest.raises(ModelFileError, match=r"^\S*shared.keras: layer 'conv' is applied 2 times") as err:
        import_user_model(tmp_path / "shared.keras", _dataset((8, 8, 2), 3))
    assert "\n" not in str(err.value)


def test_run_model_key_and_missing_file(tmp_path):
    from prunehw.core.config import RunConfig
    from prunehw.core.errors import ConfigError
    from prunehw.flow import Flow

    with pytest.raises(ConfigError, match=r"run.model = 'net.h5'; allowed: a .keras file"):
        RunConfig(model="net.h5")
    cfg = RunConfig(build_dir=str(tmp_path), model=str(tmp_path / "absent.keras"))
    assert RunConfig.from_toml_dict(cfg.to_toml_dict()) == cfg
    with pytest.raises(ModelFileError, match="run.model: model file not found: .*absent.keras"):
        Flow(cfg, log=lambda *a: None).train()
    assert not (tmp_path / "default" / "dense" / "model.keras").exists()


def test_an_input_the_array_cannot_hold_is_refused_at_import(tmp_path):
    """Three input channels on a 2-column array: said when the model is imported, before any long stage."""
    from prunehw.core.config import ArrayConfig, DataConfig, RunConfig
    from prunehw.core.errors import ConfigError
    from prunehw.flow import Flow

    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 256, (8, 8, 8, 3)).astype(np.uint8), y_test=np.arange(8) % 4)
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(2, 3, activation="relu"), L.Flatten(), L.Dense(4)])
    model.save(tmp_path / "rgb.keras")
    cfg = RunConfig(build_dir=str(tmp_path / "build"), model=str(tmp_path / "rgb.keras"),
                    data=DataConfig(source=str(data)), array=ArrayConfig(rows=2, cols=2))
    with pytest.raises(ConfigError, match=r"the input has 3 channels but the 2x2 array holds at most 2"):
        Flow(cfg, log=lambda *a: None).train()
    assert not (tmp_path / "build" / "default" / "dense" / "model.keras").exists()
