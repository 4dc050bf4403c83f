"""A user's Keras model rewritten into the supported layers computes the same function (float, to rounding)."""

import keras
import numpy as np
import pytest

from prunehw.core.errors import ModelFileError
from prunehw.model.network import check_supported
from prunehw.model.user_model import normalize


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
    return {"fused": fused, "batchnorm": bn, "mlp": mlp, "same": same, "strided": strided, "average": average}


_ENDS_IN_SOFTMAX = ("fused", "batchnorm", "strided", "average")


@pytest.mark.parametrize("name", ["fused", "batchnorm", "mlp", "same", "strided", "average"])
def test_normalized_model_computes_the_same_logits(name):
    model = _models()[name]
    rng = np.random.default_rng(0)
    for layer in model.layers:   # make batch normalization do something
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32) if i != len(layer.get_weights()) - 1
                               else rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for i, w in enumerate(layer.get_weights())])
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
    convs = [(tuple(l.strides), l.padding) for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(tuple(l.strides), l.padding) for l in out.layers if isinstance(l, keras.layers.Conv2D)] == convs
    pooling = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    pools = [(type(l).__name__, tuple(l.pool_size)) for l in model.layers if isinstance(l, pooling)]
    assert [(type(l).__name__, tuple(l.pool_size)) for l in out.layers if isinstance(l, pooling)] == pools


@pytest.mark.parametrize("layers, match", [
    (lambda L: [L.Conv2D(4, 3, strides=(1, 2)), L.Flatten(), L.Dense(10)],
     r"conv layer 'conv2d\w*' uses strides \(1, 2\); supported: square kernels, padding valid or same, square strides"),
    (lambda L: [L.Conv2D(4, 3, dilation_rate=2, padding="same"), L.Flatten(), L.Dense(10)],
     r"conv layer 'conv2d\w*' uses dilation_rate \(2, 2\); supported: .*dilation 1"),
    (lambda L: [L.Conv2D(4, (3, 5)), L.Flatten(), L.Dense(10)], r"has a \(3, 5\) kernel; supported: square kernels"),
    (lambda L: [L.Conv2D(4, 3, activation="tanh"), L.Flatten(), L.Dense(10)], "fuses activation 'tanh'"),
    (lambda L: [L.BatchNormalization(), L.Flatten(), L.Dense(10)], "does not follow a Conv2D or Dense"),
    (lambda L: [L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(), L.Flatten(), L.Dense(10)],
     "does not follow a Conv2D or Dense"),
    (lambda L: [L.Conv2D(4, 3), L.AveragePooling2D(3), L.Flatten(), L.Dense(10)],
     r"AveragePooling2D 'average_pooling2d\w*' has a \(3, 3\) window, not a power of two; supported: square windows, "
     r"strides equal to the window, padding valid, a power-of-two window \(1, 2, 4, 8, \.\.\.\)"),
    (lambda L: [L.Conv2D(4, 3), L.AveragePooling2D(2, strides=1), L.Flatten(), L.Dense(10)],
     r"AveragePooling2D 'average_pooling2d\w*' is \(2, 2\) with strides \(1, 1\); supported: square windows"),
    (lambda L: [L.Conv2D(4, 3), L.AveragePooling2D(2, padding="same"), L.Flatten(), L.Dense(10)],
     r"AveragePooling2D 'average_pooling2d\w*' uses padding 'same'; supported: .*padding valid"),
    (lambda L: [L.Conv2D(4, 3), L.MaxPooling2D((2, 3)), L.Flatten(), L.Dense(10)],
     r"MaxPooling2D 'max_pooling2d\w*' has a \(2, 3\) window; supported: square windows"),
    (lambda L: [L.Conv2D(4, 3), L.GlobalAveragePooling2D(), L.Dense(10)], "unsupported type GlobalAveragePooling2D"),
    (lambda L: [L.Flatten(), L.Dense(10, activation="softmax"), L.Dense(10)], "fuses activation 'softmax'"),
])
def test_unsupported_layers_are_refused_in_one_line(layers, match):
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers(keras.layers)])
    with pytest.raises(ModelFileError, match=match) as err:
        normalize(model, "user.keras")
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
