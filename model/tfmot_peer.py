"""Peer run: TensorFlow Model Optimization's ``prune_low_magnitude`` on the same network and budget.

TFMOT only works on legacy tf.keras (the ``tf-keras`` package), so this module
runs in its own process with ``TF_USE_LEGACY_KERAS=1`` and never shares a
process with the Keras 3 models: :func:`run_peer` starts it and reads back one
JSON line. The child rebuilds the architecture from a JSON spec, loads the
trained weights from an ``.npz`` (so both tools start from the same network),
prunes with a polynomial (iterative) or constant (one-shot) sparsity schedule
over the same number of epochs, and reports test accuracy and saved sizes with
and without TFMOT's pruning state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from prunehw.core.artifacts import dir_bytes

__all__ = ["peer_available", "run_peer"]


def peer_available() -> str | None:
    """None when tfmot and tf-keras are installed, else the reason they are not."""
    import importlib.util

    for mod in ("tensorflow_model_optimization", "tf_keras"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'prunehw[peer]')"
    return None


def run_peer(model, data_cfg: dict, schedule: str, ratio: float, epochs: int, batch_size: int,
             learning_rate: float, seed: int) -> dict:
    """Prune ``model`` (a Keras 3 model) with TFMOT in a subprocess; returns its measurements."""
    from prunehw.model.matrix_form import network_spec

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.npz"
        import numpy as np

        np.savez(weights, *model.get_weights())
        job = {
            "spec": network_spec(model).to_dict(), "input_shape": list(model.inputs[0].shape[1:]),
            "weights": str(weights), "data": data_cfg, "schedule": schedule, "ratio": ratio, "epochs": epochs,
            "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed, "tmp": tmp,
        }
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        res = subprocess.run([sys.executable, "-m", "prunehw.model.tfmot_peer", json.dumps(job)],
                             capture_output=True, text=True, env=env)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        raise RuntimeError(f"TFMOT peer failed: {tail}")
    return json.loads(res.stdout.strip().splitlines()[-1])



def _child(job: dict) -> dict:
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from prunehw.core.config import DataConfig
    from prunehw.model.activations import relu_layer
    from prunehw.model.data import load_dataset, to_float

    tf_keras.utils.set_random_seed(job["seed"])
    tf.config.experimental.enable_op_determinism()
    data = load_dataset(DataConfig(**job["data"]))
    layers = [tf_keras.Input(shape=tuple(job["input_shape"]))]
    for spec in job["spec"]["layers"]:
        t, name = spec["type"], spec["name"]
        layers.append({
            "conv2d": lambda: tf_keras.layers.Conv2D(spec["filters"], spec["kernel"], strides=spec.get("stride", 1),
                                                     padding=spec.get("padding", "valid"), name=name),
            "dense": lambda: tf_keras.layers.Dense(spec["units"], name=name),
            "relu": lambda: relu_layer("relu", name, tf_keras.layers),
            "relu6": lambda: relu_layer("relu6", name, tf_keras.layers),
            "maxpool2d": lambda: tf_keras.layers.MaxPooling2D(spec["pool"], name=name),
            "avgpool2d": lambda: tf_keras.layers.AveragePooling2D(spec["pool"], name=name),
            "flatten": lambda: tf_keras.layers.Flatten(name=name),
        }[t]())
    model = tf_keras.Sequential(layers)
    with np.load(job["weights"]) as npz:
        model.set_weights([npz[f"arr_{i}"] for i in range(len(npz.files))])
    steps_per_epoch = int(np.ceil(len(data.x_train) / job["batch_size"]))
    end = max(1, job["epochs"] * steps_per_epoch)
    if job["schedule"] == "oneshot":
        sched = tfmot.sparsity.keras.ConstantSparsity(job["ratio"], begin_step=0, frequency=1)
    else:
        # prune during the first 2/3 of the budget, as our iterative schedule's steps do, then fine-tune
        # the final sparsity is reached only if end_step is a multiple of the pruning frequency
        freq = max(1, end // 30)
        sched = tfmot.sparsity.keras.PolynomialDecay(0.0, job["ratio"], begin_step=0,
                                                      end_step=max(freq, ((2 * end) // 3) // freq * freq), frequency=freq)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=sched)
    pruned.compile(optimizer=tf_keras.optimizers.Adam(job["learning_rate"]),
                   loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    pruned.fit(to_float(data.x_train), data.y_train, epochs=job["epochs"], batch_size=job["batch_size"],
               shuffle=True, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    tmp = Path(job["tmp"])
    tf.saved_model.save(pruned, str(tmp / "wrapped"))
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    tf.saved_model.save(stripped, str(tmp / "stripped"))
    kernels = [l.kernel.numpy() for l in stripped.layers if hasattr(l, "kernel")]
    total = sum(k.size for k in kernels)
    zeros = sum(int((k == 0).sum()) for k in kernels)
    logits = stripped.predict(to_float(data.x_test), batch_size=1000, verbose=0)
    return {
        "accuracy": float(np.mean(np.argmax(logits, 1) == data.y_test)),
        "ratio_measured": zeros / total,
        "savedmodel_bytes_with_pruning_state": dir_bytes(tmp / "wrapped"),
        "savedmodel_bytes_stripped": dir_bytes(tmp / "stripped"),
    }


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
