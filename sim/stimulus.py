"""The mutation campaign's stimulus, chosen by coverage: images that make every arithmetic event of every layer
happen (``export.golden.layer_events``), so that a fault in the logic handling an event cannot hide.

Test images are taken first (the first ``base`` test images, then, greedily, the test image that covers most
of what is still missing). An event no image can reach is proven so: interval bounds from the pixels' range
through every layer (exact for the first layer; for the second, over each window tap's pixel vertices) fall
short of its threshold. An event still missing is, for the second layer of a network that begins
``conv -> max pool -> conv``, constructed: the largest accumulator over the binary images of its receptive
field, exactly (:mod:`prunehw.sim.receptive`). Else it is searched for: gradient ascent on a float mirror of the
contract's network (TensorFlow; the integer weights at their scales, the same convolutions, poolings and ReLUs)
from the test images that come closest and from noise, each noise image climbing one channel; then coordinate
ascent on the golden model itself from the closest image found (pixels moved one at a time, each move scored
with the exact integer arithmetic, within a fixed number of scored images, so the same start gives the same
image anywhere); then a hill climb. A second-layer event still not reached gets a tighter bound over its whole
receptive field at once, which may prove it unreachable; for a channel that bound does not rule out, an exact
integer program over every image of the field (:func:`prunehw.sim.receptive.integer_program`) either constructs
an image that reaches it or proves that none does. What is still not reached is reported with how close the
closest image came and how far the bound reaches, never counted as covered.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from prunehw.core.geometry import conv_geometry, conv_stride, kernel_size
from prunehw.core.graph import INPUT
from prunehw.export.bounds import accumulator_bounds
from prunehw.export.contract import output_range
from prunehw.export.golden import accumulate, layer_events, layer_input
from prunehw.export.kinds import kind
from prunehw.sim.receptive import field, fitted_bound, integer_program, max_sum

__all__ = ["choose_stimulus"]


def _threshold(layer: dict, event: str) -> float:
    """The accumulator value at which ``event`` (``saturation`` or ``accumulator_top``) happens on the upper side:
    ``|acc| >= 2**(bits - 4)`` for the top bits; for saturation, where the rounded value passes the output's
    largest code (round half up: halfway between it and the next; a relu6's cap where it is lower)."""
    if event == "accumulator_top":
        return 2 ** (layer["accum"]["bits"] - 4)
    o = layer["output"]
    top = output_range(o)[1] + 0.5
    return top * 2.0 ** (layer["accum"]["frac"] - o["frac"])


def _closeness(contract, x: np.ndarray, target: str) -> np.ndarray:
    """Per image, how close ``target`` (``layer:event``) comes to happening: > 0 once it happens."""
    name, event = target.split(":")
    layer = next((l for l in contract.layers if l["name"] == name), None)
    if layer is None:
        raise ValueError(f"no layer {name!r}")
    acc = accumulate(layer, layer_input(contract, x, name), contract).reshape(len(x), -1)
    if event == "accumulator_top":
        return np.abs(acc).max(axis=1) / _threshold(layer, event) - 1
    if event == "saturation":
        return acc.max(axis=1) / _threshold(layer, event) - 1
    if event == "relu_clamp":
        return -acc.min(axis=1).astype(float)
    return np.zeros(len(x))     # (rounding ties: no gradient to climb; they are common anyway)


def _mirror(contract, target: str, aim: list[tuple[int, int]] | None = None):
    """A float mirror of the contract's network up to ``target``'s layer (``layer:saturation`` or
    ``layer:accumulator_top``), in TensorFlow: the integer weights at their scales, the same convolutions, poolings
    and ReLUs; returns ``f(x)``, per image (pixels / 256) the layer's largest accumulator (its largest magnitude
    for ``accumulator_top``), to climb by gradient. With ``aim``, one (output channel, sign) per image (channel -1:
    the whole layer as without it): that channel's largest accumulator times the sign, over its positions. One
    image climbing one channel's accumulator follows that channel's gradient all the way; climbing the layer's
    maximum, it follows whichever channel leads at each step and settles where none can pass the others."""
    import tensorflow as tf

    name, event = target.split(":")
    if aim is not None:
        channels = [c for c, _ in aim]
        sel = np.zeros((len(aim), max(max(channels) + 1, 1)), np.float32)
        for i, (c, sign) in enumerate(aim):
            if c >= 0:
                sel[i, c] = sign
        whole = tf.constant([c < 0 for c in channels])

    def forward(x):
        values = {INPUT: x}                             # pixels / 256: the input's real values
        for layer in contract.layers:                   # (in the graph's order: an add reads two)
            kd = kind(layer)
            args = [values[s] for s in layer["inputs"]]
            if layer["name"] == name:
                a = args[0]
                acc = kd.float_accumulate(layer, a, contract)
                flat = tf.reshape(acc, (tf.shape(a)[0], -1))
                top = tf.reduce_max(tf.abs(flat) if event == "accumulator_top" else flat, axis=1)
                if aim is None:
                    return top
                per = tf.reshape(acc, (tf.shape(a)[0], -1, layer["out_channels"]))
                pick = tf.constant(np.pad(sel, ((0, 0), (0, layer["out_channels"] - sel.shape[1]))))
                return tf.where(whole, top, tf.reduce_max(tf.reduce_sum(per * pick[:, None, :], axis=2), axis=1))
            values[layer["name"]] = kd.float_evaluate(layer, args, contract)
        raise ValueError(f"no layer {name!r}")

    return forward


def _aims(contract, target: str, bounds: dict, n: int) -> list[tuple[int, int]]:
    """The ``n`` (output channel, sign) pairs of ``target``'s layer whose accumulator bounds reach furthest towards
    the event (a sign of -1: the event's lower side, an accumulator's top bits reached by a negative value)."""
    name, event = target.split(":")
    layer = next(l for l in contract.layers if l["name"] == name)
    return [(j, int(sign)) for _, j, sign in _reach_pairs(layer, event, bounds[name])[:n]]


def _ascend(contract, starts: np.ndarray, target: str, aim: list[tuple[int, int]] | None = None,
            steps: int = 150) -> tuple[np.ndarray | None, np.ndarray]:
    """Gradient ascent towards ``target`` (``layer:saturation`` or ``layer:accumulator_top``) on the float mirror
    of the contract's network, from each of ``starts``: the pixels (kept in [0, 255]) are moved to drive the
    layer's largest accumulator up (with ``aim``, each image its own channel's: :func:`_mirror`). Returns (an image
    where the golden model shows the event, or None; the rounded image that came closest)."""
    import tensorflow as tf

    forward = _mirror(contract, target, aim)
    x = tf.Variable(starts.astype(np.float32) / 256.0)
    opt = tf.keras.optimizers.Adam(0.02)
    best, best_score = starts[0], -np.inf
    for step in range(steps):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_sum(forward(x))
        opt.apply_gradients([(tape.gradient(loss, x), x)])
        x.assign(tf.clip_by_value(x, 0.0, 255.0 / 256.0))
        if step % 25 == 24 or step == steps - 1:
            imgs = np.clip(np.rint(x.numpy() * 256.0), 0, 255).astype(np.uint8)
            hit = layer_events(contract, imgs)[target]
            if hit.any():
                return imgs[int(hit.argmax())], imgs[int(hit.argmax())]
            scores = _closeness(contract, imgs, target)
            if scores.max() > best_score:
                best, best_score = imgs[int(scores.argmax())], scores.max()
    return None, best


def _polish(contract, start: np.ndarray, target: str, budget: int = 8000, width: int = 96) -> np.ndarray | None:
    """Coordinate ascent on the golden model itself, guided by the mirror's gradient: each round ranks the pixels
    by the gain the gradient promises for moving one to 0 or 255, tries the ``width`` best one at a time and the
    best 2, 4, ... together, each exactly (integer arithmetic, rounding and saturation as the hardware has them),
    and keeps the best image; where none of those helps, every pixel to a few values. Stops at the event, at a
    local maximum of the exact model or once ``budget`` candidate images have been scored (a count, not a time:
    the same start gives the same image on any machine). Returns an image where the event happens, or None.
    Gradient ascent stops short where the float mirror's smooth landscape and the rounding part ways; this is
    what closes that last gap."""
    import tensorflow as tf

    forward = _mirror(contract, target)
    best = start.astype(np.uint8).copy()
    score = _closeness(contract, best[None], target)[0]
    scored = 0
    while scored < budget:
        if score > 0:
            return best
        x = tf.Variable(best[None].astype(np.float32) / 256.0)
        with tf.GradientTape() as tape:
            val = tf.reduce_sum(forward(x))
        g = tape.gradient(val, x).numpy().reshape(-1)
        flat = best.reshape(-1).astype(np.int64)
        want = np.where(g > 0, 255, 0)
        gain = g * (want - flat)
        order = [int(i) for i in np.argsort(-gain)[:width] if gain[i] > 0]
        cands = []
        for i in order:
            c = flat.copy()
            c[i] = want[i]
            cands.append(c)
        k = 2
        while k <= len(order):
            c = flat.copy()
            c[order[:k]] = want[order[:k]]
            cands.append(c)
            k *= 2
        scores = _closeness(contract, np.stack(cands).astype(np.uint8).reshape(-1, *best.shape), target) \
            if cands else np.array([-np.inf])
        scored += len(cands)
        if scores.max() <= score:
            # the gradient's picks do not help (rounding, a ReLU or a max pool switching): every pixel, each to a
            # few values, exactly
            cands = []
            for i in range(flat.size):
                for v in dict.fromkeys((0, 255, flat[i] - 32, flat[i] + 32)):
                    if 0 <= v <= 255 and v != flat[i]:
                        c = flat.copy()
                        c[i] = v
                        cands.append(c)
            scores = _closeness(contract, np.stack(cands).astype(np.uint8).reshape(-1, *best.shape), target)
            scored += len(cands)
            if scores.max() <= score:
                return None                 # a local maximum of the exact model
        score = scores.max()
        best = np.asarray(cands[int(scores.argmax())]).astype(np.uint8).reshape(best.shape)
    return best if score > 0 else None


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


def _window_vertex_bounds(contract, first_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For the second weighted layer of a network that begins ``conv -> [max pool] -> conv`` on the pixels (the
    first layer's accumulators at most ``first_hi``, per channel, over every image): per output channel, bounds on
    its accumulator over every image, sound and far tighter than interval arithmetic, or None where the network
    does not begin so or a window is too large (over 16 pixels).

    Its accumulator is its bias plus one term per tap of its window, each a function of the few pixels under
    that tap (the first layer's windows that the pool there takes its maximum over). Each term is bounded over
    its own pixels alone (which only loosens the bound: the taps' pixels overlap), by a convex function
    (:meth:`~prunehw.sim.receptive.Field.majorants`). A convex function on a box is largest at a vertex, so the
    largest over the pixels' vertices (each pixel 0 or its maximum: 2**n images for n pixels) bounds the term.
    (:func:`_field_bound` bounds the terms' sum at once, where an event needs it.)"""
    f = field(contract)
    if f is None:
        return None
    verts = f.vertices(first_hi)
    b = contract.biases[f.second["name"]].astype(np.float64)
    lo, hi = (b + sign * (np.maximum(most, 0) if f.padded else most).sum(axis=(0, 1))     # (a padded tap adds 0)
              for sign, most in ((s, f.majorants(verts, s)[1]) for s in (-1.0, 1.0)))
    return np.ceil(lo - 1e-6), np.floor(hi + 1e-6)


def _event_side(layer: dict, event: str, sign: float) -> float:
    """The value ``sign`` times the accumulator reaches where ``event`` happens on that side."""
    if event == "saturation" and sign < 0:
        return -_saturation_floor(layer)
    return _threshold(layer, event)


def _reach_pairs(layer: dict, event: str, bounds: tuple[np.ndarray, np.ndarray]) -> list[tuple[float, int, float]]:
    """(how far its bound reaches, of the threshold; channel; side) for each output channel and side of ``layer``
    on which ``event`` can happen, furthest first; ``bounds``: its accumulator's (lo, hi), per channel or per
    position and channel."""
    c, o = layer["out_channels"], layer["output"]
    lo = np.asarray(bounds[0], np.float64).reshape(-1, c).min(axis=0)
    hi = np.asarray(bounds[1], np.float64).reshape(-1, c).max(axis=0)
    sides = [1.0] + ([-1.0] if event == "accumulator_top" or (o["signed"] and not o["relu"]) else [])
    pairs = [(float(sign * (hi if sign > 0 else lo)[j]) / _event_side(layer, event, sign), j, sign)
             for sign in sides for j in range(c)]
    return sorted(pairs, key=lambda p: (-p[0], p[1], -p[2]))


def _field_best(contract, f, verts: dict, j: int, sign: float) -> tuple[float, np.ndarray] | None:
    """The largest of ``sign`` times the second layer's accumulator of channel ``j`` (at its first position) over the
    binary images of its receptive field (each pixel 0 or its maximum), exactly: each tap's golden term summed by
    :func:`~prunehw.sim.receptive.max_sum`; and an image that gives it (the field at its top left). None where the
    field is not laid out in cells, either layer pads, or the elimination's tables would be too large."""
    if not f.gridded or f.first.get("padding", "valid") != "valid":
        return None
    w = f.weights()
    tables = {(ty, tx): f.table(sign * (verts["exact"] @ w[ty, tx, :, j]))
              for ty in range(f.taps[0]) for tx in range(f.taps[1])}
    best = max_sum(f, tables)
    if best is None:
        return None
    patch = f.image(best[1], (1 << contract.input["bits"]) - 1)
    return sign * contract.biases[f.second["name"]][j] + best[0], _placed(contract, patch)


def _placed(contract, patch: np.ndarray) -> np.ndarray:
    """A whole input image with the receptive field's pixels ``patch`` at its top left (the field of the second
    layer's first output), zeros elsewhere."""
    img = np.zeros(contract.input["shape"], np.uint8)
    img[:patch.shape[0], :patch.shape[1]] = patch
    return img


def _field_bound_at(contract, f, verts: dict, j: int, sign: float, target: float | None = None,
                    rounds: int = 30) -> float | None:
    """A bound on ``sign`` times the second layer's accumulator of channel ``j`` over every image, taken over its
    whole receptive field at once (:func:`~prunehw.sim.receptive.fitted_bound`): tighter than the per-tap bound,
    since the taps share pixels and each input is held low by its own minorant, fitted to the field. Stops once
    below ``target`` (or sure it cannot get there). None where the field is not laid out in cells, its second
    layer pads, or the elimination's tables would be too large."""
    if not f.gridded:
        return None
    bias = sign * contract.biases[f.second["name"]][j]
    best = fitted_bound(f, verts, sign * f.weights()[..., j], None if target is None else target - bias, rounds)
    return None if best is None else float(np.floor(bias + best + 1e-6))


def _field_witness(contract, f, event: str, bounds: dict, verts: dict) -> tuple[np.ndarray | None, float]:
    """An image on which ``event`` of the second layer happens, constructed by :func:`_field_best` for each channel
    and side whose bound reaches it (furthest first), or None where no binary image of the field reaches it; and
    the closest the constructed images came (of the threshold)."""
    nearest = 0.0
    for reach, j, sign in _reach_pairs(f.second, event, bounds[f.second["name"]]):
        if reach < 1:
            break
        best = _field_best(contract, f, verts, j, sign)
        if best is None:
            continue
        frac = best[0] / _event_side(f.second, event, sign)
        nearest = max(nearest, frac)
        if frac >= 1 and layer_events(contract, best[1][None])[f"{f.second['name']}:{event}"][0]:
            return best[1], nearest
    return None, nearest


class FieldReach(NamedTuple):
    """What :func:`_field_bound` found for an event of the second layer."""
    #: how far its accumulator can reach towards the event, as a fraction of the event's threshold
    reach: float
    #: an image the integer program found that reaches the event, or None
    image: np.ndarray | None
    #: whether the integer program was needed (some channel the fitted field bound did not rule out)
    program_used: bool


def _field_bound(contract, f, event: str, bounds: dict, verts: dict) -> FieldReach | None:
    """How far the second layer's accumulator can reach towards ``event`` (of its threshold): the per-tap bound,
    tightened by :func:`_field_bound_at` for every channel and side where it reaches the event, and where that
    does not rule the channel out, decided by the exact integer program (:func:`_program_decides`); below 1 only
    if every channel is ruled out, otherwise the furthest that is not. None where the field bound does not
    apply."""
    reach, used = 0.0, False
    for r, j, sign in _reach_pairs(f.second, event, bounds[f.second["name"]]):
        if r < 1:
            return FieldReach(max(reach, r), None, used)
        thr = _event_side(f.second, event, sign)
        joint = _field_bound_at(contract, f, verts, j, sign, target=thr)
        if joint is None:
            return None
        if joint >= thr:
            used = True
            exact, image = _program_decides(contract, f, j, sign, thr, bounds[f.first["name"]][1])
            if image is not None and layer_events(contract, image[None])[f"{f.second['name']}:{event}"][0]:
                return FieldReach(exact, image, used)
            joint = min(joint, exact * thr)
        reach = max(reach, min(r, joint / thr))
    return FieldReach(reach, None, used)


#: the fractions of an event's threshold at which the integer program is asked whether an image gets there: the
#: lower first (a proof there gives the figure), then the threshold itself
_PROGRAM_CUTS = (0.99, 1.0)


def _program_decides(contract, f, j: int, sign: float, thr: float, first_hi: np.ndarray
                     ) -> tuple[float, np.ndarray | None]:
    """Whether an image makes ``sign`` times the second layer's accumulator of channel ``j`` reach ``thr``, asked
    of the exact integer program over its receptive field (:func:`~prunehw.sim.receptive.integer_program`) at each
    of :data:`_PROGRAM_CUTS`: (how far it can reach, of ``thr``: the first cut no image gets to, just below the
    threshold where that is the threshold itself, or infinity where the program did not decide; an image reaching
    ``thr``, placed in a whole input, or None)."""
    bias = sign * float(contract.biases[f.second["name"]][j])
    w = sign * f.weights()[..., j]
    for cut in _PROGRAM_CUTS:
        out = integer_program(f, w, bias, first_hi, at_least=cut * thr)
        if out is None or out[0] == "open":
            return np.inf, None
        if out[0] == "none":
            # (the accumulator is an integer: below the threshold is at most the integer under it)
            return (cut if cut < 1 else (np.ceil(thr) - 1) / thr), None
        if out[1] >= thr:
            return out[1] / thr, _placed(contract, out[2])
    return np.inf, None


def _saturation_floor(layer: dict) -> float:
    """The accumulator at which a signed output without a ReLU saturates on its lower side (below its least code)."""
    o = layer["output"]
    shift = layer["accum"]["frac"] - o["frac"]
    qmin = -(1 << (o["bits"] - 1))
    return qmin * 2 ** shift - (1 << (shift - 1)) - 1 if shift > 0 else (qmin - 1) / 2 ** (-shift)


def _accumulator_bounds(contract) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """Per weighted layer, the lowest and highest accumulator each output channel can reach, and how that was
    found: the contract's interval bounds along its graph (:func:`prunehw.export.bounds.accumulator_bounds`, by
    which it sizes its accumulators), tightened for the second layer by :func:`_window_vertex_bounds` where it
    applies. Sound: no image gets outside them; exact for the first layer, an over-estimate after it."""
    def tighten(layer, acc, found):
        vertex = _window_vertex_bounds(contract, found[first][1]) if len(found) == 1 else None
        return None if vertex is None else (vertex, "bound over each window's pixel vertices")

    first = contract.weighted()[0]["name"]
    return accumulator_bounds(contract, tighten)


def _bound_reach(contract, bounds=None) -> tuple[dict[str, float], dict[str, str]]:
    """For ``layer:saturation`` and ``layer:accumulator_top``, how far the accumulator's bounds
    (:func:`_accumulator_bounds`) reach towards the event, as a fraction of its threshold (below 1, no image can
    make it happen), and which bound that is."""
    out = {}
    last = contract.weighted()[-1]["name"]
    bounds, how = bounds or _accumulator_bounds(contract)
    for name, (lo, hi) in bounds.items():
        layer = next(l for l in contract.layers if l["name"] == name)
        out[f"{name}:accumulator_top"] = max(-lo.min(), hi.max()) / _threshold(layer, "accumulator_top")
        if name != last:
            o = layer["output"]
            up = hi.max() / _threshold(layer, "saturation")
            if o["signed"] and not o["relu"]:
                up = max(up, lo.min() / _saturation_floor(layer))
            out[f"{name}:saturation"] = float(up)
    return out, {k: how[k.split(":")[0]] for k in out}


def _first_layer_extremes(contract, shape) -> np.ndarray:
    """For the first (conv or dense) layer, whose inputs are the image's pixels: per output channel, the image that
    drives it highest (255 where its weight is positive, else 0, in the top-left window), which is its exact
    maximum; so an event it does not reach is unreachable by any image."""
    layer = contract.weighted()[0]
    w = kind(layer).full_matrix(contract.weights[layer["name"]])
    h, wd, c = shape
    out = []
    for j in range(w.shape[1]):
        img = np.zeros((h, wd, c), np.uint8)
        patch = np.where(w[:, j] > 0, 255, 0).astype(np.uint8)
        if kind(layer).windowed:
            # the window of the first output position that lies wholly on the image (padding reads zeros)
            (kh, kw), (sh, sw) = kernel_size(layer["kernel"]), conv_stride(layer)
            _, _, pt, pl = conv_geometry(h, wd, (kh, kw), (sh, sw), layer.get("padding", "valid"))
            y0, x0 = -(-pt // sh) * sh - pt, -(-pl // sw) * sw - pl
            img[y0:y0 + kh, x0:x0 + kw, :] = patch.reshape(kh, kw, c)
        else:
            img.reshape(-1)[:len(patch)] = patch
        out.append(img)
    return np.stack(out)


def _search(contract, cand: np.ndarray, target: str, shape: tuple, bounds: dict, rng
            ) -> tuple[np.ndarray | None, str, float]:
    """(an image where ``target`` happens, or None; how it was found; how close the closest image came, of the
    threshold less 1): gradient ascent from the closest of the candidate test images ``cand``, climbing the layer's
    maximum, and from noise, each climbing the channel (and side) whose bound reaches furthest; then coordinate
    ascent on the golden model from the closest image found and from the closest test image; then a hill climb."""
    cand_closeness = _closeness(contract, cand, target)
    near = np.argsort(-cand_closeness)[:8]
    aim = _aims(contract, target, bounds, 16)
    noise = rng.integers(0, 256, (len(aim), *shape)).astype(np.uint8)
    found, nearest = _ascend(contract, np.concatenate([cand[near].reshape(len(near), *shape), noise]), target,
                             [(-1, 1)] * len(near) + aim, steps=400)
    how = "searched (gradient ascent)"
    for origin in (nearest, cand[near[0]].reshape(shape)):
        if found is None:
            found, how = _polish(contract, origin, target), "searched (exact coordinate ascent)"
    if found is None:
        found, how = _climb(contract, cand[near[0]], target, rng), "searched (hill climb)"
    closest = float(max(cand_closeness.max(), _closeness(contract, nearest[None], target)[0]))
    return found, how, closest


def choose_stimulus(contract, x_test: np.ndarray, base: int, pool: int = 2000, seed: int = 0):
    """``(images, coverage)``: the first ``base`` test images plus what covers the remaining events, and one row per
    ``layer:event``: its ``status`` (``reached``, ``unreachable``: proven by a bound, or ``undecided``: neither
    reached nor proven unreachable, a possible hole in the stimulus), what reached it (a test image's index,
    ``searched``, ``constructed``) or the bound that rules it out, the first stimulus image where it happens, and
    for an undecided event how close the closest image came and how far the bound reaches."""
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
    # the first layer's exact extremes: the images that reach what the first layer can reach
    first = contract.weighted()[0]["name"]
    shape = x_test.shape[1:] if x_test.ndim == 4 else (*x_test.shape[1:], 1)
    extremes = _first_layer_extremes(contract, shape)
    hit = layer_events(contract, extremes)
    for k, v in hit.items():
        if k.startswith(f"{first}:") and k not in source and v.any():
            images.append(extremes[int(v.argmax())].reshape(cand[0].shape))
            source[k] = "constructed (first layer's extreme input)"
    # what no image can reach: the accumulator's bounds (exact for the first layer) fall short of it
    bounds = _accumulator_bounds(contract)
    reach, bound_how = _bound_reach(contract, bounds)
    for k, r in reach.items():
        if k not in source and r < 1:
            source[k] = f"unreachable ({bound_how[k]}: the accumulator reaches at most {r:.1%} of the event's threshold)"
    closest: dict[str, float] = {}
    # the second layer over its whole receptive field (a network that begins conv -> max pool -> conv): the exact
    # largest accumulator over its binary images, and a bound over all of them
    f, verts = field(contract), None
    for k in [k for k, c in covered.items() if c is None]:
        if k in source:          # covered meanwhile by an image searched for another event
            continue
        name, event = k.split(":")
        in_field = f is not None and name == f.second["name"] and event in ("saturation", "accumulator_top")
        if in_field and verts is None:
            verts = f.vertices(bounds[0][contract.weighted()[0]["name"]][1])
        found, field_near = _field_witness(contract, f, event, bounds[0], verts) if in_field else (None, 0.0)
        how = "constructed (the largest accumulator over the binary images of its receptive field)"
        if found is None:
            found, how, near_miss = _search(contract, cand, k, shape, bounds[0], rng)
            near_miss = max(near_miss, float(field_near) - 1)
        if found is None:
            joint = _field_bound(contract, f, event, bounds[0], verts) if in_field else None
            if joint is not None and joint.image is not None:
                found, how = joint.image, "constructed (an exact integer program over its receptive field's images)"
            elif joint is not None and joint.reach < reach.get(k, np.inf):
                reach[k], bound_how[k] = joint.reach, (
                    "bound over the receptive field's pixel vertices, minorants fitted"
                    + ("; an exact integer program over its images for channels that bound does not rule out"
                       if joint.program_used else "") + " (the per-tap bound for channels it did not need to try)")
                if joint.reach < 1:
                    source[k] = (f"unreachable ({bound_how[k]}: the accumulator reaches at most {joint.reach:.1%} of "
                                 f"the event's threshold)")
                    continue
        if found is None:
            source[k] = "not reached"
            closest[k] = near_miss
            continue
        found = found.reshape(cand[0].shape)
        images.append(found)
        hit = layer_events(contract, found[None])
        for k2, v in hit.items():
            if v[0] and k2 not in source:
                source[k2] = how
        source.setdefault(k, how)
    stim = np.stack(images)
    hits = layer_events(contract, stim)
    rows = []
    for k in ev:
        status = ("reached" if hits[k].any() else "unreachable" if source[k].startswith("unreachable")
                  else "undecided")
        # (closest, bound: fractions of the event's threshold; the closest only for an undecided event)
        rows.append({"event": k, "status": status, "covered_by": source[k],
                     "first_stimulus_image": int(hits[k].argmax()) if hits[k].any() else "-",
                     "closest": round(1 + closest[k], 4) if k in closest else "-",
                     "bound": round(float(reach[k]), 6) if k in reach else "-",
                     "bound_by": bound_how[k] if k in reach else "-"})
    return stim, rows
