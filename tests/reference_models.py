"""The MLPerf Tiny reference architectures, built from Keras layers as their users write them, and MNIST shaped to
their inputs (the tests make their data: no data set is downloaded).

- :func:`ds_cnn`: keyword spotting's DS-CNN on a 49 x 10 x 1 "spectrogram": Conv2D(64, (10, 4), strides 2, same) +
  BatchNorm + ReLU, four blocks of DepthwiseConv2D(3x3, same) + BatchNorm + ReLU + Conv2D(64, 1x1) + BatchNorm +
  ReLU, Dropout, AveragePooling2D((25, 5)), Flatten, Dense(classes, softmax).
- :func:`resnet8`: image classification's ResNet-8 on 32 x 32 x 3: Conv2D(16, 3, same) + BatchNorm + ReLU, three
  residual stacks of 16, 32 and 64 filters (3x3 convolutions; stride 2 and a 1x1 stride-2 shortcut convolution in
  the second and third), Add then ReLU, AveragePooling2D(8), Flatten, Dense(classes, softmax).
- :func:`mobilenet_v1`: visual wake words' MobileNetV1 at a small width on 32 x 32 x 3: Conv2D(8, 3, strides 2) +
  BatchNorm + ReLU6, depthwise-separable blocks (DepthwiseConv2D 3x3 + BatchNorm + ReLU6, Conv2D 1x1 + BatchNorm +
  ReLU6; stride 2 in the depthwise of every other block), GlobalAveragePooling2D, Dense(classes, softmax).

MNIST's 10 digits stand in for the classes (keyword spotting has 12, visual wake words 2). ``width`` scales every
layer's filters (1: the reference's), so a test can run the same architecture smaller.
"""

from __future__ import annotations

import numpy as np


def _bn():
    import keras

    # (momentum 0.9: a short training leaves the default 0.99's moving statistics far from the data's)
    return keras.layers.BatchNormalization(momentum=0.9)


def ds_cnn(classes: int = 10, width: float = 1.0):
    import keras

    L, f = keras.layers, max(1, int(64 * width))
    x = keras.Input((49, 10, 1), name="spectrogram")
    y = L.ReLU()(_bn()(L.Conv2D(f, (10, 4), strides=(2, 2), padding="same", use_bias=False)(x)))
    for _ in range(4):
        y = L.ReLU()(_bn()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(y)))
        y = L.ReLU()(_bn()(L.Conv2D(f, 1, use_bias=False)(y)))
    y = L.Flatten()(L.AveragePooling2D((25, 5))(L.Dropout(0.4)(y)))
    return keras.Model(x, L.Dense(classes, activation="softmax")(y), name="ds_cnn")


def resnet8(classes: int = 10, width: float = 1.0):
    import keras

    L = keras.layers
    x = keras.Input((32, 32, 3), name="image")
    y = L.ReLU()(_bn()(L.Conv2D(max(1, int(16 * width)), 3, padding="same")(x)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        f = max(1, int(filters * width))
        a = L.ReLU()(_bn()(L.Conv2D(f, 3, strides=stride, padding="same")(y)))
        a = _bn()(L.Conv2D(f, 3, padding="same")(a))
        shortcut = y if stride == 1 else L.Conv2D(f, 1, strides=stride)(y)
        y = L.Activation("relu")(L.Add()([a, shortcut]))
    y = L.Flatten()(L.AveragePooling2D(8)(y))
    return keras.Model(x, L.Dense(classes, activation="softmax")(y), name="resnet8")


def mobilenet_v1(classes: int = 10, width: float = 1.0):
    import keras

    L = keras.layers
    x = keras.Input((32, 32, 3), name="image")
    y = L.ReLU(max_value=6)(_bn()(L.Conv2D(max(1, int(8 * width)), 3, strides=2, padding="same", use_bias=False)(x)))
    for filters, stride in ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1)):
        y = L.ReLU(max_value=6)(_bn()(L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(y)))
        y = L.ReLU(max_value=6)(_bn()(L.Conv2D(max(1, int(filters * width)), 1, use_bias=False)(y)))
    y = L.Dropout(0.2)(L.GlobalAveragePooling2D()(y))
    return keras.Model(x, L.Dense(classes, activation="softmax")(y), name="mobilenet_v1")


#: each model's builder and input shape
MODELS = {"ds_cnn": (ds_cnn, (49, 10, 1)), "resnet8": (resnet8, (32, 32, 3)), "mobilenet_v1": (mobilenet_v1, (32, 32, 3))}


def shaped_mnist(x: np.ndarray, shape: tuple[int, int, int], seed: int = 7) -> np.ndarray:
    """MNIST images (N x 28 x 28 x 1 uint8) shaped to a model's input: 49 x 10 x 1 as a "spectrogram" (each digit
    resized to 49 x 10, bilinear), 32 x 32 x 3 as colour images (each digit padded, tinted in a random colour over a
    dim random background)."""
    x = np.asarray(x).reshape(-1, 28, 28, 1)
    if shape == (28, 28, 1):
        return x
    if shape == (49, 10, 1):
        import tensorflow as tf

        out = tf.image.resize(tf.constant(x, tf.float32), (49, 10), method="bilinear").numpy()
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if shape == (32, 32, 3):
        rng = np.random.default_rng(seed)
        x = np.pad(x[..., 0].astype(np.float32), ((0, 0), (2, 2), (2, 2)))[..., None]
        tint = rng.uniform(0.4, 1.0, (len(x), 1, 1, 3))
        back = rng.uniform(0, 60, (len(x), 1, 1, 3))
        return np.clip(x * tint + back * (1 - x / 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"no MNIST shaping to {shape}")


def trained(name: str, x_train: np.ndarray, y_train: np.ndarray, epochs: int = 2, width: float = 1.0, seed: int = 3):
    """Reference model ``name`` trained briefly in plain Keras on images already shaped to it (uint8)."""
    import keras

    build, _ = MODELS[name]
    keras.utils.set_random_seed(seed)
    model = build(width=width)
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy())
    model.fit(x_train.astype("float32") / 256.0, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model
