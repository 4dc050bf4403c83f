"""Training and evaluation of the float network, with tqdm progress."""

from __future__ import annotations

import time

import keras
import numpy as np
from tqdm.auto import tqdm

from prunehw.model.data import Dataset, to_float

__all__ = ["TqdmProgress", "compile_model", "fit", "evaluate", "train_float"]


class TqdmProgress(keras.callbacks.Callback):
    """One tqdm bar per epoch over its batches, with loss and validation accuracy."""

    def __init__(self, desc: str, epochs: int):
        super().__init__()
        self._desc, self._epochs, self._bar = desc, epochs, None

    def on_epoch_begin(self, epoch, logs=None):
        total = self.params.get("steps") if self.params else None
        self._bar = tqdm(total=total, desc=f"{self._desc} {epoch + 1}/{self._epochs}", unit="batch", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        # called once per execution of ``STEPS_PER_EXECUTION`` batches, with the last batch's index
        done = batch + 1 if self._bar.total is None else min(batch + 1, self._bar.total)
        self._bar.update(done - self._bar.n)
        if logs and "loss" in logs:
            self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

    def on_epoch_end(self, epoch, logs=None):
        self._bar.close()
        if logs and "val_accuracy" in logs:
            tqdm.write(f"{self._desc} {epoch + 1}/{self._epochs}: loss {logs['loss']:.4f} val_accuracy {logs['val_accuracy']:.4f}")


#: Training batches per call into the compiled train step. One call per batch
#: costs a hand-off between Python and TensorFlow's executor per batch; on one
#: core (two sweep workers on two cores) that made a pruning task 12.0 s
#: instead of 7.4 s. The weights are bit-for-bit the same for any value.
STEPS_PER_EXECUTION = 32


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )


def fit(model: keras.Model, data: Dataset, epochs: int, batch_size: int, learning_rate: float,
        desc: str, callbacks: list | None = None, decay: bool = True) -> None:
    """Train with Adam; with ``decay`` the learning rate follows a cosine to 1% over the run.

    Data order comes from Keras' shuffling under the global seed (``set_seed``).
    """
    steps = epochs * int(np.ceil(len(data.x_train) / batch_size))
    lr = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.01) if decay else learning_rate
    compile_model(model, lr)
    model.fit(
        to_float(data.x_train), data.y_train,
        validation_data=(to_float(data.x_val), data.y_val),
        epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
        callbacks=[TqdmProgress(desc, epochs), *(callbacks or [])],
    )


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    return model.predict(to_float(x), batch_size=batch_size, verbose=0)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on uint8 images ``x``."""
    return float(np.mean(np.argmax(predict_logits(model, x), axis=1) == y))


def train_float(model: keras.Model, data: Dataset, epochs: int, batch_size: int, learning_rate: float) -> float:
    """Train the float network; returns the wall time in seconds."""
    start = time.perf_counter()
    fit(model, data, epochs, batch_size, learning_rate, desc="train epoch")
    return time.perf_counter() - start
