"""The mutation campaign's stimulus, chosen by coverage: images that make every arithmetic event of every layer
happen (``export.golden.layer_events``), so that a fault in the logic handling an event cannot hide.

Test images are taken first (the first ``base`` test images, then, greedily, the test image that covers most
of what is still missing); an event no test image reaches is searched for: gradient ascent on a float mirror
of the contract's network (TensorFlow; the integer weights at their scales, the same convolutions, poolings and
ReLUs) driving the layer's largest accumulator up from the test images that come closest, each result rounded
to pixels and checked with the golden model; then a hill climb from the closest test image, changing a few
pixels at a time and keeping a change when the golden model gets closer to the event. What is still not
reached is reported, never counted as covered.
"""

from __future__ import annotations

import numpy as np

from prunehw.core.geometry import conv_geometry
from prunehw.export.golden import _conv_cols, _layer, _matmul, layer_events

__all__ = ["choose_stimulus"]


def _closeness(contract, x: np.ndarray, target: str) -> np.ndarray:
    """Per image, how close ``target`` (``layer:event``) comes to happening: > 0 once it happens."""
    name, event = target.split(":")
    a = x[..., None].astype(np.int64) if x.ndim == 3 else x.astype(np.int64)
    for layer in contract.layers:
        if layer["name"] == name:
            w, b = contract.weights[name], contract.biases[name]
            cols = _conv_cols(layer, a) if layer["type"] == "conv2d" else a
            acc = (_matmul(cols, w, layer["accum"]["bits"]) + b).reshape(len(a), -1)
            o = layer["output"]
            if event == "accumulator_top":
                return np.abs(acc).max(axis=1) / 2 ** (layer["accum"]["bits"] - 4) - 1
            if event == "saturation":
                shift = layer["accum"]["frac"] - o["frac"]
                top = ((1 << (o["bits"] - 1)) if o["signed"] else (1 << o["bits"])) - 0.5
                return acc.max(axis=1) / 2.0 ** shift / top - 1
            if event == "relu_clamp":
                return -acc.min(axis=1).astype(float)
            return np.zeros(len(a))     # (rounding ties: no gradient to climb; they are common anyway)
        a = _layer(layer, a, contract)
    raise ValueError(f"no layer {name!r}")


def _ascend(contract, starts: np.ndarray, target: str, steps: int = 150) -> np.ndarray | None:
    """Gradient ascent towards ``target`` (``layer:saturation`` or ``layer:accumulator_top``) on a float mirror of
    the contract's network, from each of ``starts``: the pixels (kept in [0, 255]) are moved to drive the layer's
    largest accumulator (its largest magnitude for ``accumulator_top``) up. Returns an image where the golden
    model shows the event, or None."""
    import tensorflow as tf

    name, event = target.split(":")
    if event not in ("saturation", "accumulator_top"):
        return None

    def forward(x):
        a = x                                           # pixels / 256: the input's real values
        for layer in contract.layers:
            t = layer["type"]
            if t in ("conv2d", "dense"):
                w = contract.weights[layer["name"]] * 2.0 ** -layer["weight"]["frac"]
                b = contract.biases[layer["name"]] * 2.0 ** -layer["accum"]["frac"]
                if t == "conv2d":
                    k, c = layer["kernel"], int(a.shape[-1])
                    acc = tf.nn.conv2d(a, tf.constant(w.reshape(k, k, c, -1), tf.float32), layer.get("stride", 1),
                                       layer.get("padding", "valid").upper()) + tf.constant(b, tf.float32)
                else:
                    acc = tf.matmul(a, tf.constant(w, tf.float32)) + tf.constant(b, tf.float32)
                if layer["name"] == name:
                    flat = tf.reshape(acc, (tf.shape(acc)[0], -1))
                    return tf.reduce_max(tf.abs(flat) if event == "accumulator_top" else flat, axis=1)
                a = tf.nn.relu(acc) if layer["output"]["relu"] else acc
            elif t in ("maxpool2d", "avgpool2d"):
                pool = tf.nn.max_pool2d if t == "maxpool2d" else tf.nn.avg_pool2d
                a = pool(a, layer["pool"], layer["pool"], "VALID")
            else:
                a = tf.reshape(a, (tf.shape(a)[0], -1))
        raise ValueError(f"no layer {name!r}")

    x = tf.Variable(starts.astype(np.float32) / 256.0)
    opt = tf.keras.optimizers.Adam(0.02)
    for step in range(steps):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_sum(forward(x))
        opt.apply_gradients([(tape.gradient(loss, x), x)])
        x.assign(tf.clip_by_value(x, 0.0, 255.0 / 256.0))
        if step % 25 == 24 or step == steps - 1:
            imgs = np.clip(np.rint(x.numpy() * 256.0), 0, 255).astype(np.uint8)
            hit = layer_events(contract, imgs)[target]
            if hit.any():
                return imgs[int(hit.argmax())]
    return None


def _climb(contract, start: np.ndarray, target: str, rng, steps: int = 60, width: int = 48) -> np.ndarray | None:
    """A hill climb from ``start`` towards ``target``: each step tries ``width`` variants (a few pixels set to
    0 or 255, or the image scaled up), keeps the best; returns an image where it happens, or None."""
    best = start.copy()
    score = _closeness(contract, best[None], target)[0]
    for _ in range(steps):
        if score > 0:
            return best
        cands = np.repeat(best[None], width, axis=0).astype(np.int64)
        for c in cands[: width // 2]:
            idx = rng.integers(0, c.size, 6)
            c.reshape(-1)[idx] = rng.choice([0, 255], 6)
        for k, c in enumerate(cands[width // 2:]):
            c[...] = np.clip(c * (1.1 + 0.05 * k), 0, 255)
        cands = cands.astype(np.uint8)
        scores = _closeness(contract, cands, target)
        if scores.max() > score:
            score, best = scores.max(), cands[int(scores.argmax())]
    return best if score > 0 else None


def _first_layer_extremes(contract, shape) -> np.ndarray:
    """For the first (conv or dense) layer, whose inputs are the image's pixels: per output channel, the image that
    drives it highest (255 where its weight is positive, else 0, in the top-left window), which is its exact
    maximum; so an event it does not reach is unreachable by any image."""
    layer = contract.weighted()[0]
    w = contract.weights[layer["name"]]
    h, wd, c = shape
    out = []
    for j in range(w.shape[1]):
        img = np.zeros((h, wd, c), np.uint8)
        patch = np.where(w[:, j] > 0, 255, 0).astype(np.uint8)
        if layer["type"] == "conv2d":
            # the window of the first output position that lies wholly on the image (padding reads zeros)
            k, st = layer["kernel"], layer.get("stride", 1)
            _, _, pt, pl = conv_geometry(h, wd, k, st, layer.get("padding", "valid"))
            y0, x0 = -(-pt // st) * st - pt, -(-pl // st) * st - pl
            img[y0:y0 + k, x0:x0 + k, :] = patch.reshape(k, k, c)
        else:
            img.reshape(-1)[:len(patch)] = patch
        out.append(img)
    return np.stack(out)


def choose_stimulus(contract, x_test: np.ndarray, base: int, pool: int = 2000, seed: int = 0):
    """``(images, coverage)``: the first ``base`` test images plus what covers the remaining events, and one row per
    ``layer:event``: where it is first covered (a test image's index, ``searched`` or ``not reached``)."""
    rng = np.random.default_rng(seed)
    cand = x_test[:pool]
    ev = layer_events(contract, cand)
    chosen = list(range(min(base, len(cand))))
    covered = {k: next((i for i in chosen if v[i]), None) for k, v in ev.items()}
    while True:
        missing = [k for k, c in covered.items() if c is None]
        gains = np.sum([ev[k] for k in missing], axis=0) if missing else None
        if gains is None or gains.max() == 0:
            break
        i = int(gains.argmax())
        chosen.append(i)
        for k in missing:
            if ev[k][i]:
                covered[k] = i
    images = [cand[i] for i in chosen]
    source = {k: f"test image {c}" for k, c in covered.items() if c is not None}
    # the first layer's exact extremes: what they reach is covered, what they do not is unreachable
    first = contract.weighted()[0]["name"]
    shape = x_test.shape[1:] if x_test.ndim == 4 else (*x_test.shape[1:], 1)
    extremes = _first_layer_extremes(contract, shape)
    hit = layer_events(contract, extremes)
    for k, v in hit.items():
        if k.startswith(f"{first}:") and k not in source:
            if v.any():
                images.append(extremes[int(v.argmax())].reshape(cand[0].shape))
                source[k] = "constructed (first layer's extreme input)"
            elif not k.endswith(":relu_clamp"):
                source[k] = "unreachable (beyond any image's reach: the first layer's exact extreme misses it)"
    for k in [k for k, c in covered.items() if c is None]:
        if k in source:          # covered meanwhile by an image searched for another event
            continue
        near = np.argsort(-_closeness(contract, cand, k))[:8]
        found = _ascend(contract, cand[near].reshape(len(near), *shape), k)
        how = "searched (gradient ascent)"
        if found is None:
            found, how = _climb(contract, cand[near[0]], k, rng), "searched (hill climb)"
        if found is None:
            source[k] = "not reached"
            continue
        found = found.reshape(cand[0].shape)
        images.append(found)
        hit = layer_events(contract, found[None])
        for k2, v in hit.items():
            if v[0] and k2 not in source:
                source[k2] = how
        source.setdefault(k, how)
    rows = [{"event": k, "covered_by": source[k]} for k in ev]
    return np.stack(images), rows
