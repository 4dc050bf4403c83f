"""Users' own Keras models and data sets through the whole flow, as a user runs it:
``prunehw run --model FILE.keras --data FILE.npz``. Each model is trained here in plain Keras, then imported in
place of training, pruned, quantized, and checked bit-exact with the golden model in hls4ml and in Verilator on
300 test images, with cycles and activity counters equal to the analytic model.

The four models: fused activations with a 2 x 3 max pooling, Dropout and a final softmax; ``same`` padding with BatchNormalization
and separate ReLU layers; a strided convolution with a relu6 (its cap reached), a non-square (3 x 2) kernel, an
``Activation`` layer and a 3 x 3 average (a division by 9); and a
LeNet-5-style CNN (``same`` padding, BatchNorm, average pooling, three dense layers) on 32x32x3 colour images.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from cli_helpers import need_tool

from prunehw.sim.runner import simulator_missing

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
#: test images through hls4ml and Verilator per model and variant
IMAGES = 300


def _models():
    # (BatchNormalization with momentum 0.9: two short epochs leave the default 0.99's moving statistics far
    # from the data's, and the imported model runs on those)
    L = keras.layers
    return {
        "fused_relu_dropout_softmax_pool2x3": ((28, 28, 1), [
            L.Conv2D(8, 5, activation="relu"), L.MaxPooling2D((2, 3)), L.Flatten(), L.Dropout(0.2),
            L.Dense(32, activation="relu"), L.Dense(10, activation="softmax")]),
        "same_padding_batchnorm": ((28, 28, 1), [
            L.Conv2D(8, 3, padding="same"), L.BatchNormalization(momentum=0.9), L.ReLU(), L.MaxPooling2D(),
            L.Conv2D(16, 3, padding="same"), L.BatchNormalization(momentum=0.9), L.ReLU(), L.MaxPooling2D(), L.Flatten(),
            L.Dense(10)]),
        # (a relu6 whose cap acts: the first conv starts with large weights; strides 2 down and 1 across)
        "stride2x1_average3_relu6_nonsquare": ((28, 28, 1), [
            L.Conv2D(8, 3, strides=(2, 1), padding="same",
                     kernel_initializer=keras.initializers.RandomNormal(stddev=3.0)),
            L.ReLU(max_value=6), L.Conv2D(16, (3, 2)), L.Activation("relu"),
            L.AveragePooling2D(3), L.Flatten(), L.Dense(10, activation="softmax")]),
        "lenet5_32x32x3": ((32, 32, 3), [
            L.Conv2D(6, 5, padding="same"), L.BatchNormalization(momentum=0.9), L.ReLU(), L.AveragePooling2D(2),
            L.Conv2D(16, 5), L.BatchNormalization(momentum=0.9), L.ReLU(), L.AveragePooling2D(2), L.Flatten(),
            L.Dense(120, activation="relu"), L.Dense(84, activation="relu"), L.Dense(10, activation="softmax")]),
    }


def _data(mnist, shape):
    """MNIST as the model's input: 28x28x1 as is, or 32x32x3 colour images (each digit padded, tinted in a random
    colour over a dim random background), a CIFAR-shaped set the test makes itself."""
    x_train, y_train = mnist.x_train[:5000], mnist.y_train[:5000]
    x_test, y_test = mnist.x_test[:IMAGES], mnist.y_test[:IMAGES]
    if shape == (32, 32, 3):
        rng = np.random.default_rng(7)

        def colour(x):
            x = np.pad(x.reshape(-1, 28, 28).astype(np.float32), ((0, 0), (2, 2), (2, 2)))[..., None]
            tint = rng.uniform(0.4, 1.0, (len(x), 1, 1, 3))
            back = rng.uniform(0, 60, (len(x), 1, 1, 3))
            return np.clip(x * tint + back * (1 - x / 255.0), 0, 255).astype(np.uint8)

        x_train, x_test = colour(x_train), colour(x_test)
    return x_train, y_train, x_test, y_test


@pytest.mark.regression
@pytest.mark.parametrize("name", list(_models()))
def test_user_model_runs_the_whole_flow(tmp_path, mnist, name):
    need_tool(simulator_missing("verilator"))
    shape, layers = _models()[name]
    x_train, y_train, x_test, y_test = _data(mnist, shape)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    keras.utils.set_random_seed(3)
    user = keras.Sequential([keras.Input(shape), *layers])
    user.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=name == "same_padding_batchnorm"))
    user.fit(x_train.astype("float32") / 256.0, y_train, epochs=2, batch_size=64, verbose=0)
    model = tmp_path / f"{name}.keras"
    user.save(model)

    text = (ROOT / "configs" / "quick.toml").read_text()
    for old, new in [('build_dir = "../build"', f'build_dir = "{tmp_path / "build"}"'),
                     ("test_limit = 500", "test_limit = 0"), ("hls_images = 200", "hls_images = 0"),
                     ("verilator_images = 200", "verilator_images = 0"), ("icarus_images = 2 ", "icarus_images = 0 ")]:
        assert old in text, f"configs/quick.toml no longer says {old!r}: update this test"
        text = text.replace(old, new)
    text = text[:text.index("[[variants]]")] + '[[variants]]\nmethod = "matrix"\nratio = 0.50\n' + \
        text[text.index("[experiments]"):]
    config = tmp_path / "run.toml"
    config.write_text(text)
    res = subprocess.run([sys.executable, "-m", "prunehw.cli", "run", "--config", str(config), "--model", str(model),
                          "--data", str(data)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    summary = json.loads((tmp_path / "build" / "quick" / "summary.json").read_text())
    rewrites = summary["train"]["rewrites"]
    if "softmax" in name or "lenet" in name or "stride2" in name:
        assert any("softmax dropped" in r for r in rewrites), rewrites
    if "batchnorm" in name or "lenet" in name:
        assert sum("batch normalization folded" in r for r in rewrites) == 2, rewrites
    for v in ("dense", "matrix-0.50"):
        entry = summary["variants"][v]
        assert entry["bitexact"]["hls"] == {"match": IMAGES, "total": IMAGES}, (v, entry["bitexact"])
        rtl = entry["bitexact"]["rtl_verilator"]
        assert (rtl["match"], rtl["total"]) == (IMAGES, IMAGES), (v, rtl)
        assert entry["cycles"]["rtl_equals_analytic"] and entry["activity_equals_analytic"], v
    assert summary["variants"]["dense"]["accuracy"]["float"] > 0.8, summary["variants"]["dense"]["accuracy"]
    if "relu6" in name:       # the cap is in the contract and the hardware's outputs reach it
        from prunehw.export.contract import load_contract
        from prunehw.export.golden import golden

        contract = load_contract(tmp_path / "build" / "quick" / "dense" / "contract.json")
        conv = contract.layers[0]
        cap = 6 * 2 ** conv["output"]["frac"]
        assert conv["output"]["relu_max"] == 6 and cap < 2 ** conv["output"]["bits"] - 1, conv["output"]
        outs = golden(contract, x_test, return_all=True)[1][conv["name"]]
        assert outs.max() == cap and (outs == cap).mean() > 0.001, (outs.max(), cap)
