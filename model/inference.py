"""Inference paths whose speed the experiments compare (seed Figs 14 and 20), and saved sizes (Fig 13).

- dense: the Keras model as is (pruned weights are zeros inside dense tensors);
- sparse: the same weights in a real sparse format, ``tf.sparse`` CSR-like
  ``SparseTensor`` products (convolutions through ``tf.image.extract_patches``,
  whose patch order (ky, kx, c) matches the im2col matrix form);
- the matrix-pruned model is simply a smaller dense Keras model.
"""

from __future__ import annotations

import gzip
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from prunehw.core.artifacts import dir_bytes
from prunehw.model.activations import relu_cap
from prunehw.model.data import to_float

__all__ = ["sparse_forward", "dense_forward", "time_inference", "saved_sizes"]


def sparse_forward(model: keras.Model):
    """A ``tf.function`` computing ``model``'s logits with every weight matrix as a ``tf.SparseTensor``."""
    ops = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            k = layer.kernel.numpy()
            wt = k.reshape(-1, k.shape[-1]).T  # (cols, rows): products are W^T @ x^T
            sp = tf.sparse.from_dense(tf.constant(wt))
            conv = isinstance(layer, keras.layers.Conv2D)
            ops.append(("conv" if conv else "dense", sp, tf.constant(layer.bias.numpy()), k.shape[0],
                        layer.strides[0] if conv else 1, layer.padding.upper() if conv else "VALID"))
        elif isinstance(layer, keras.layers.ReLU):
            ops.append(("relu", relu_cap(layer)))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            ops.append(("pool", layer.pool_size[0]))
        elif isinstance(layer, keras.layers.AveragePooling2D):
            ops.append(("avgpool", layer.pool_size[0]))
        elif isinstance(layer, keras.layers.Flatten):
            ops.append(("flatten",))

    @tf.function(reduce_retracing=True)
    def run(x):
        for op in ops:
            if op[0] == "conv":
                _, sp, b, k, s, padding = op     # (TF pads SAME as Keras' Conv2D does)
                p = tf.image.extract_patches(x, [1, k, k, 1], [1, s, s, 1], [1, 1, 1, 1], padding)
                n, h, w, d = tf.unstack(tf.shape(p))
                y = tf.sparse.sparse_dense_matmul(sp, tf.reshape(p, (-1, d)), adjoint_b=True)
                x = tf.reshape(tf.transpose(y), (n, h, w, -1)) + b
            elif op[0] == "dense":
                _, sp, b, *_ = op
                x = tf.transpose(tf.sparse.sparse_dense_matmul(sp, x, adjoint_b=True)) + b
            elif op[0] == "relu":
                x = tf.nn.relu(x) if op[1] is None else tf.clip_by_value(x, 0.0, op[1])
            elif op[0] == "pool":
                x = tf.nn.max_pool2d(x, op[1], op[1], "VALID")
            elif op[0] == "avgpool":
                x = tf.nn.avg_pool2d(x, op[1], op[1], "VALID")
            else:
                x = tf.reshape(x, (tf.shape(x)[0], -1))
        return x

    return run


def time_inference(fn, x_uint8: np.ndarray, repeats: int, batch: int = 1000) -> list[float]:
    """Wall time (s) of each of ``repeats`` runs of ``fn`` over all of ``x_uint8`` in batches, after a warm-up:
    every run is returned, so a verdict can look at the spread, not at one lucky run."""
    batches = [tf.constant(to_float(x_uint8[i:i + batch])) for i in range(0, len(x_uint8), batch)]
    for b in batches[:2]:
        fn(b)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            fn(b).numpy()
        runs.append(time.perf_counter() - start)
    return runs


def dense_forward(model: keras.Model):
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)



def saved_sizes(model: keras.Model) -> dict[str, int]:
    """Bytes of the model (weights and architecture, no optimizer state) as a ``.keras`` file, as a TensorFlow SavedModel, and the ``.keras`` file gzip'd."""
    from prunehw.model.network import strip_training_state

    model = strip_training_state(model)
    with tempfile.TemporaryDirectory() as tmp:
        kpath = Path(tmp) / "m.keras"
        model.save(kpath)
        raw = kpath.read_bytes()
        model.export(str(Path(tmp) / "saved"), format="tf_saved_model", verbose=False)
        return {"keras": len(raw), "savedmodel": dir_bytes(Path(tmp) / "saved"),
                "gzip": len(gzip.compress(raw, compresslevel=9, mtime=0))}
