"""The mutation campaign's stimulus, chosen by coverage: images that make every arithmetic event of every layer
happen (``export.golden.layer_events``), so that a fault in the logic handling an event cannot hide.

Test images are taken first (the first ``base`` test images, then, greedily, the test image that covers most
of what is still missing); an event no test image reaches is searched for: a hill climb from the test image
that comes closest, changing a few pixels at a time and keeping a change when the golden model gets closer to
the event. What is still not reached is reported, never counted as covered.
"""

from __future__ import annotations

import numpy as np

from prunehw.export.golden import _im2col, _layer, _matmul, layer_events

__all__ = ["choose_stimulus"]


def _closeness(contract, x: np.ndarray, target: str) -> np.ndarray:
    """Per image, how close ``target`` (``layer:event``) comes to happening: > 0 once it happens."""
    name, event = target.split(":")
    a = x[..., None].astype(np.int64) if x.ndim == 3 else x.astype(np.int64)
    for layer in contract.layers:
        if layer["name"] == name:
            w, b = contract.weights[name], contract.biases[name]
            cols = _im2col(a, layer["kernel"]) if layer["type"] == "conv2d" else a
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
            k = layer["kernel"]
            img[:k, :k, :] = patch.reshape(k, k, c)
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
    extremes = _first_layer_extremes(contract, x_test.shape[1:] if x_test.ndim == 4 else (*x_test.shape[1:], 1))
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
        start = cand[int(_closeness(contract, cand, k).argmax())]
        found = _climb(contract, start, k, rng)
        if found is None:
            source[k] = "not reached"
            continue
        images.append(found)
        hit = layer_events(contract, found[None])
        for k2, v in hit.items():
            if v[0] and k2 not in source:
                source[k2] = "searched"
        source.setdefault(k, "searched")
    rows = [{"event": k, "covered_by": source[k]} for k in ev]
    return np.stack(images), rows
