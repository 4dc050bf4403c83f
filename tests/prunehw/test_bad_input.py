"""Bad input as users give it: every case refused in one line (``error: ...``, exit 2), before anything is written.

One table of cases: a config (the base below with some tables replaced), a command line, and the files the case
needs (data sets, model files). Cases that the config or the command line decide, and bad data sets, are run as
a user runs them (a ``prunehw`` process) and must be refused within 2 s: the config, the command line and the
data are checked before TensorFlow is imported. Cases that need a model (the user's or the configured network)
run through ``prunehw.cli.main`` in this process, so TensorFlow loads once for all of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from cli_helpers import run_cli

#: the base config's tables (small: nothing here trains, but a case that got through would)
BASE = {
    "run": 'name = "t"\nseed = 7\nbuild_dir = "build"',
    "data": "train_limit = 1000\ntest_limit = 200",
    "train": "epochs = 1",
    "prune": "steps = 1\nfinetune_epochs = 1\ncalibration_images = 64",
}


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    message: str
    tables: dict = field(default_factory=dict)      # config tables replacing or joining BASE's (None: drop)
    files: tuple[str, ...] = ()                    # names of the inputs the case needs (see ``_make``)
    fast: bool = True                              # decided before TensorFlow is imported: run as a process, < 2 s


def C(id, message, *argv, files=(), fast=True, **tables):
    return Case(id, argv or ("train",), message, tables, tuple(files), fast)


CASES = [
    # -- the config file ----------------------------------------------------------------------------------------
    C("config-missing", "config file not found", "train", "--config", "none.toml"),
    C("config-not-toml", "is not valid TOML", raw="not toml ["),
    C("unknown-section", "unknown section 'trian'", trian="epochs = 1"),
    C("unknown-key", "[array] unknown key 'row'; allowed: rows, cols, dataflow", array="row = 4"),
    C("zero-workers", "sim.workers = 0 must be > 0", sim="workers = 0"),
    C("string-for-int", "array.rows must be an integer, got str '8'", array='rows = "8"'),
    C("bool-for-int", "train.epochs must be an integer, got bool True", train="epochs = true"),
    C("unknown-layer", "network.layers[0].type = 'conv3d' is unknown",
      network='layers = [{type = "conv3d", filters = 2}, {type = "dense", units = 10}]'),
    C("last-not-dense", "the last layer must be dense", network='layers = [{type = "flatten"}, {type = "relu"}]'),
    C("pool-window-pair", "network.layers[0].pool: [2, 0] is not a [height, width] pair of positive integers",
      network='layers = [{type = "maxpool2d", pool = [2, 0]}, {type = "flatten"}, {type = "dense", units = 10}]'),
    C("ratio-above-1", "ratio = 1.2 is out of range", variants='method = "matrix"\nratio = 1.2'),
    C("ratio-negative", "ratio = -0.1 is out of range", variants='method = "matrix"\nratio = -0.1'),
    C("unknown-method", "variants[0].method = 'random' is unknown; allowed: dense, unstructured, matrix",
      variants='method = "random"\nratio = 0.5'),
    C("no-ratio", "give one of ratio", variants='method = "matrix"'),
    C("target-on-unstructured", 'allowed with method "matrix"', variants='method = "unstructured"\ntarget_cycles = 900'),
    C("duplicate-variant", "'matrix-0.50' is listed twice", variants=['method = "matrix"\nratio = 0.5'] * 2),
    C("dataflow-os", "array.dataflow = 'os' is not built; allowed: ws", array='dataflow = "os"'),
    C("zero-rows", "array.rows = 0 must be > 0", array="rows = 0"),
    C("weight-bits-9", "quant.weight_bits = 9; allowed: integers 2..8", quant="weight_bits = 9"),
    C("run-name-path", "run.name = 'a/b'; allowed: a plain folder name", run='name = "a/b"\nbuild_dir = "build"'),
    C("model-not-keras", "run.model = 'net.h5'; allowed: a .keras file", run='name = "t"\nbuild_dir = "build"\nmodel = "net.h5"'),
    C("build-dir-not-a-folder", "/dev/null is not a folder", run='name = "t"\nbuild_dir = "/dev/null/build"'),
    C("baud-not-a-divisor", "clock cycles per bit", board="baud = 3000000"),
    C("unknown-board", "board.name = 'Arty' is not a board prunehw builds for; allowed: ULX3S-85F, iCEBreaker",
      board='name = "Arty"'),
    C("icebreaker-baud", "baud 115200 at 12 MHz is 104.167 clock cycles per bit", board='name = "iCEBreaker"\nbaud = 115200'),
    C("val-fraction", "data.val_fraction = 1.5; allowed: 0 < val_fraction < 1",
      data="train_limit = 1000\nval_fraction = 1.5"),
    C("empty-ratio-list", "experiments.ratios must be a non-empty list", experiments="ratios = []"),
    C("unknown-scope", "prune.scope = 'everywhere' is unknown", prune='scope = "everywhere"'),
    C("max-loss-without-auto", 'max_loss is the budget of weight_bits = "auto"',
      variants='method = "matrix"\nratio = 0.5\nmax_loss = 1.0'),
    # -- the command line ---------------------------------------------------------------------------------------
    C("prune-ratio-1", "out of range; allowed: 0 <= ratio < 1", "prune", "--method", "matrix", "--ratio", "1.0"),
    C("prune-method-alone", "give --method with --ratio", "prune", "--method", "matrix"),
    C("prune-ratio-alone", "give --method with --ratio", "prune", "--ratio", "0.5"),
    C("prune-target-unstructured", 'allowed with method "matrix"', "prune", "--method", "unstructured",
      "--target-cycles", "900"),
    C("sim-images-negative", "--images -1: allowed: N >= 0 (0 = all test images)", "sim", "--images", "-1"),
    C("sim-workers-zero", "--workers 0: allowed: N >= 1", "sim", "--workers", "0"),
    C("mutate-images-negative", "--images -2: allowed: N >= 0", "mutate", "--images", "-2"),
    C("variant-close-match", "variant 'matrix-0.8' is not in the config; did you mean 'matrix-0.80'? allowed: dense, "
      "unstructured-0.90, matrix-0.80", "sim", "--variant", "matrix-0.8"),
    C("variant-unknown", "variant 'bogus' is not in the config; allowed: dense,", "rtl", "--variant", "bogus"),
    C("board-run-variant", "variant 'nope' is not in the config", "board-run", "--port", "/dev/null", "--variant", "nope"),
    # -- the data set -------------------------------------------------------------------------------------------
    C("data-missing", "data file not found: ", "train", "--data", "none.npz"),
    # (the config is cfg/c.toml: its path is taken from there, not from the working directory)
    C("data-relative-to-config", "data file not found: in/none.npz", "train", "--config", "cfg/c.toml",
      data='source = "../in/none.npz"'),
    C("data-lacks-key", "lacks key 'y_train'", "train", "--data", "lacks_key.npz", files=["lacks_key.npz"]),
    C("data-random-bytes", "is not a readable .npz (not a zip archive", "train", "--data", "random.npz",
      files=["random.npz"]),
    C("data-float-images", "x_train has dtype float32; allowed: uint8 images", "train", "--data", "float.npz",
      files=["float.npz"]),
    C("data-label-count", "y_test has shape (7,); expected (8,)", "train", "--data", "labels.npz", files=["labels.npz"]),
    C("data-shapes-differ", "x_test images are (9, 9, 1) but x_train images are (8, 8, 1)", "train", "--data",
      "shapes.npz", files=["shapes.npz"]),
    C("data-negative-label", "y_train holds label -1; allowed: labels >= 0", "train", "--data", "negative.npz",
      files=["negative.npz"]),
    # -- the network against the data and the array (TensorFlow) ----------------------------------------------
    C("sixteen-labels", "the last dense layer has 10 units but the data set has 16 classes", "train", "--data",
      "labels16.npz", files=["labels16.npz"], fast=False),
    C("five-by-five-images", "network layer 'conv2': kernel 3x3 is larger than its 1x1 input", "train", "--data", "tiny.npz",
      files=["tiny.npz"], fast=False),
    C("channels-beyond-the-array", "network: the input has 3 channels but the 8x2 array holds at most 2", "train",
      "--data", "rgb.npz", files=["rgb.npz"], fast=False, array="cols = 2"),
    # -- the user's model ---------------------------------------------------------------------------------------
    C("model-missing", "model file not found", "train", "--model", "none.keras", fast=False),
    C("model-garbage", "is corrupt or not a Keras model (not a zip archive", "train", "--model", "garbage.keras",
      files=["garbage.keras"], fast=False),
    C("model-broken-zip", "is corrupt or not a Keras model", "train", "--model", "broken.keras",
      files=["broken.keras"], fast=False),
    C("model-nan", "holds NaN or inf", "train", "--model", "nan.keras", files=["nan.keras"], fast=False),
    C("model-12-outputs", "model has 12 outputs but the data set has 10 classes", "train", "--model",
      "outputs12.keras", files=["outputs12.keras"], fast=False),
    C("model-32x32x3-on-mnist", "model input shape (32, 32, 3) does not match the data's images (28, 28, 1)",
      "train", "--model", "rgb32.keras", files=["rgb32.keras"], fast=False),
    C("model-ends-in-relu", "the last layer 'last_relu' is ReLU; allowed: a Dense layer", "train", "--model",
      "relu_last.keras", files=["relu_last.keras"], fast=False),
    C("model-pool-before-relu", "pool_relu", "train", "--model", "pool_relu.keras", files=["pool_relu.keras"],
      fast=False),
    C("model-two-heads", "2 outputs", "train", "--model", "two_heads.keras", files=["two_heads.keras"], fast=False),
    C("model-shared-layer", "'shared' is applied 2 times", "train", "--model", "shared.keras", files=["shared.keras"],
      fast=False),
    # (an add of the image and a conv of it: the accelerator reads an add's inputs from different buffers)
    C("model-residual-add", "add 'add': its other input 'input' is the input of the convolution", "train",
      "--model", "residual.keras", files=["residual.keras"], fast=False, variants='method = "matrix"\nratio = 0.5'),
    C("model-unsupported-layer", "layer 'up' has unsupported type UpSampling2D; supported: Conv2D", "train", "--model",
      "upsampling.keras", files=["upsampling.keras"], fast=False),
    C("model-tanh", "fuses activation 'tanh'", "train", "--model", "tanh.keras", files=["tanh.keras"], fast=False),
    C("prune-model-nan", "holds NaN or inf", "prune", "--method", "matrix", "--ratio", "0.5", "--model", "nan.keras",
      files=["nan.keras"], fast=False),
]


def _config_text(tables: dict) -> str:
    if "raw" in tables:
        return tables["raw"]
    merged = {**BASE, **tables}
    parts = []
    for name, body in merged.items():
        if body is None:
            continue
        if name == "variants":
            parts += [f"[[variants]]\n{b}" for b in (body if isinstance(body, list) else [body])]
        else:
            parts.append(f"[{name}]\n{body}")
    return "\n".join(parts) + "\n"


def _npz(path, x_train, y_train, x_test, y_test):
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _model(path, inputs_shape, layers):
    import keras

    keras.Sequential([keras.Input(inputs_shape), *layers]).save(path)


def _functional(path, build):
    import keras

    x = keras.Input((28, 28, 1))
    keras.Model(x, build(x)).save(path)


def _make(name: str, folder) -> None:
    """Write the input file ``name`` into ``folder``."""
    rng = np.random.default_rng(0)
    img = lambda n, h=8, c=1: rng.integers(0, 256, (n, h, h, c), dtype=np.uint8)   # noqa: E731
    lab = lambda n, k=10: rng.integers(0, k, n)                                    # noqa: E731
    path = folder / name
    if name == "lacks_key.npz":
        np.savez(path, x_train=img(8))
    elif name in ("random.npz", "garbage.keras"):
        path.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif name == "broken.keras":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif name == "float.npz":
        _npz(path, img(8).astype(np.float32), lab(8), img(8), lab(8))
    elif name == "labels.npz":
        _npz(path, img(8), lab(8), img(8), lab(7))
    elif name == "shapes.npz":
        _npz(path, img(8), lab(8), img(8, 9), lab(8))
    elif name == "negative.npz":
        _npz(path, img(8), np.r_[-1, lab(7)], img(8), lab(8))
    elif name == "labels16.npz":
        _npz(path, img(64, 28), lab(64, 16), img(16, 28), lab(16, 16))
    elif name == "tiny.npz":
        _npz(path, img(64, 5), lab(64), img(16, 5), lab(16))
    elif name == "rgb.npz":
        _npz(path, img(64, 28, 3), lab(64), img(16, 28, 3), lab(16))
    else:
        import keras

        L = keras.layers
        if name == "nan.keras":
            _model(path, (28, 28, 1), [L.Conv2D(4, 3), L.Flatten(), L.Dense(10)])

            m = keras.saving.load_model(path)
            k = m.layers[0].kernel.numpy()
            k[0, 0, 0, 0] = np.nan
            m.layers[0].kernel.assign(k)
            m.save(path)
        elif name == "outputs12.keras":
            _model(path, (28, 28, 1), [L.Flatten(), L.Dense(12)])
        elif name == "rgb32.keras":
            _model(path, (32, 32, 3), [L.Conv2D(4, 3), L.Flatten(), L.Dense(10)])
        elif name == "relu_last.keras":
            _model(path, (28, 28, 1), [L.Flatten(), L.Dense(10), L.ReLU(name="last_relu")])
        elif name == "pool_relu.keras":
            _model(path, (28, 28, 1), [L.Conv2D(4, 3, name="conv"), L.MaxPooling2D(name="pool"),
                                       L.ReLU(name="pool_relu"), L.Flatten(), L.Dense(10)])
        elif name == "two_heads.keras":
            x = keras.Input((28, 28, 1))
            a = L.Dense(16, name="a")(L.Flatten()(x))
            keras.Model(x, [L.Dense(10, name="head_b")(a), L.Dense(10, name="head_c")(a)]).save(path)
        elif name == "shared.keras":
            shared = L.Conv2D(1, 3, padding="same", name="shared")
            _functional(path, lambda x: L.Dense(10)(L.Flatten()(shared(shared(x)))))
        elif name == "residual.keras":
            def residual(x):
                y = L.Conv2D(1, 3, padding="same", name="branch")(x)
                return L.Dense(10)(L.Flatten()(L.Add(name="add")([x, y])))
            _functional(path, residual)
        elif name == "upsampling.keras":
            _model(path, (28, 28, 1), [L.UpSampling2D(name="up"), L.Flatten(), L.Dense(10)])
        elif name == "tanh.keras":
            _model(path, (28, 28, 1), [L.Flatten(), L.Dense(16, activation="tanh"), L.Dense(10)])
        else:
            raise AssertionError(f"no recipe for input file {name!r}")


def _setup(case: Case, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in case.files:
        _make(name, work)
    argv = list(case.argv)
    if "--config" not in argv:
        argv[1:1] = ["--config", "c.toml"]
    config = work / argv[argv.index("--config") + 1]
    if config.name != "none.toml":
        config.parent.mkdir(exist_ok=True)
        config.write_text(_config_text(case.tables))
    return work, argv


def _files_under(folder) -> set:
    return {p for p in folder.rglob("*")}


def test_there_are_enough_cases():
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if c.fast], ids=lambda c: c.id)
def test_refused_in_one_line_quickly_before_anything_is_written(tmp_path, case):
    work, argv = _setup(case, tmp_path)
    before = _files_under(work)
    start = time.perf_counter()
    res = run_cli(*argv, cwd=work, timeout=120)
    seconds = time.perf_counter() - start
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert case.message in lines[0], lines[0]
    assert _files_under(work) == before, "a refused run wrote files"
    assert seconds < 2.0, f"{case.id}: refused after {seconds:.2f} s (the config and data are checked before " \
                          f"TensorFlow is imported)"


@pytest.mark.parametrize("case", [c for c in CASES if not c.fast], ids=lambda c: c.id)
def test_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, case):
    from prunehw.cli import main

    work, argv = _setup(case, tmp_path)
    before = _files_under(work)
    monkeypatch.chdir(work)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.message in lines[0], lines[0]
    assert _files_under(work) == before, "a refused run wrote files"
