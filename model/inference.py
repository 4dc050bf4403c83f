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
from prunehw.model.kinds import of_layer
from prunehw.model.data import to_float

__all__ = ["sparse_forward", "dense_forward", "time_inference", "saved_sizes"]


def sparse_forward(model: keras.Model):
    """A ``tf.function`` computing ``model``'s logits with every weight matrix as a ``tf.SparseTensor``."""
    ops = [of_layer(layer).sparse_op(layer) for layer in model.layers]

    @tf.function(reduce_retracing=True)
    def run(x):
        for op in ops:
            x = op(x)
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
