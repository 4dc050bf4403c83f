"""The second layer of a network that begins ``conv -> [max pool] -> conv`` on the pixels, over its whole receptive
field at once: the largest value of a sum of per-tap terms over every binary image of that field (each pixel 0
or its maximum), found exactly by max-sum variable elimination.

The receptive field of one output of the second layer is a grid of cells (a cell: the pixels one pool output's
window moves by), and each of its taps reads a small block of those cells (the pixels under the pool's window of
first-layer windows). A sum of per-tap terms is then a sum of factors over overlapping blocks of a small grid, so
its maximum over all 2**(pixels) binary images is found exactly by eliminating the cells one at a time in raster
order (each elimination a maximum over one cell's patterns, the largest table one row of cells plus one).

Two uses (:mod:`prunehw.sim.stimulus`):

- a bound: each tap's term replaced by a convex function of its pixels that lies above it (the window-vertex
  bound's majorants). Their sum is convex on the whole pixel box, so its largest value lies at one of the box's
  vertices: the elimination's maximum is a sound bound on the accumulator over every image, tighter than the sum
  of each tap's largest term alone, which lets each tap pick its own value of the pixels two taps share;
- a witness: each tap's exact term (the golden model's first layer, requantization and pool on the tap's pixels).
  The maximum is the accumulator's largest value over the binary images of its field, and the elimination's
  choices are that image: an event it reaches is reached by a constructed image.

Where neither settles an event, :func:`integer_program` does, over every image of the field (not only the binary
ones): the golden model's arithmetic written as a mixed-integer linear program, which HiGHS either solves (an
image that reaches the event) or proves infeasible (no image does).
"""

from __future__ import annotations

import itertools

import numpy as np

from prunehw.core.geometry import conv_stride, kernel_size
from prunehw.export.contract import output_range
from prunehw.export.golden import apply_layer
from prunehw.export.kinds import kind

__all__ = ["Field", "field", "fitted_bound", "integer_program", "max_sum"]

#: the largest table an elimination may build (entries): a larger grid or cell is left to the other bounds
_MAX_TABLE = 1 << 24

#: how long the integer program may search for one channel (seconds); past it, the question stays open
PROGRAM_SECONDS = 300.0


class Field:
    """The layout of the second layer's receptive field: ``first``, ``pool`` (or None), ``second`` (contract
    entries); ``block`` (bh, bw): the pixels one tap reads; ``cell`` (ch, cw); ``per_tap`` (mh, mw): the cells one
    tap reads; ``grid`` (gh, gw): the cells of the field; ``cin``: the pixels' channels."""

    def __init__(self, contract, first, pool, second, cin):
        self.contract, self.first, self.pool, self.second, self.cin = contract, first, pool, second, cin
        (kh, kw), (sh, sw) = kernel_size(first["kernel"]), conv_stride(first)
        ph, pw = kernel_size(pool["pool"]) if pool else (1, 1)
        self.block = ((ph - 1) * sh + kh, (pw - 1) * sw + kw)
        self.cell = (ph * sh, pw * sw)
        self.per_tap = (self.block[0] // self.cell[0], self.block[1] // self.cell[1])
        k2h, k2w = kernel_size(second["kernel"])
        self.taps = (k2h, k2w)
        self.grid = (k2h - 1 + self.per_tap[0], k2w - 1 + self.per_tap[1])

    @property
    def whole_cells(self) -> bool:
        """Whether a tap's pixels are whole cells (else the taps' terms cannot be laid on a grid of cells)."""
        return not (self.block[0] % self.cell[0] or self.block[1] % self.cell[1])

    @property
    def gridded(self) -> bool:
        """Whether :func:`max_sum` can take the field: a tap's pixels are whole cells, and every position's taps are
        the same (the second layer does not pad)."""
        return self.whole_cells and not self.padded

    @property
    def padded(self) -> bool:
        """Whether the second layer pads its map (a padded tap reads 0: a position's taps differ)."""
        return self.second.get("padding", "valid") != "valid"

    def weights(self) -> np.ndarray:
        """The second layer's matrix per tap: (taps_h, taps_w, C1, C2)."""
        w = kind(self.second).full_matrix(self.contract.weights[self.second["name"]]).astype(np.float64)
        return w.reshape(*self.taps, self.first["out_channels"], w.shape[-1])

    def vertices(self, first_hi: np.ndarray) -> dict[str, np.ndarray]:
        """Per vertex of a tap's block (each pixel 0 or its maximum; bit ``(y * bw + x) * cin + c`` the pixel
        (y, x, c)), per first-layer channel: ``exact``, the pooled output code the golden model gives; ``upper``, a
        convex majorant of it (the largest ReLU'd accumulator over the pool's window, scaled to the output's grid,
        plus half an LSB for the rounding); ``minorants``, affine minorants of it (0, and where the first layer
        cannot saturate, given its accumulators at most ``first_hi``, each of the window's accumulators and their
        mean, scaled, less half an LSB)."""
        bh, bw = self.block
        n = bh * bw * self.cin
        top = (1 << self.contract.input["bits"]) - 1
        v = ((np.arange(1 << n)[:, None] >> np.arange(n)) & 1).astype(np.int64) * top
        valid = {**self.first, "padding": "valid"}          # (a padded pixel reads 0: one of the box's values)
        imgs = v.reshape(-1, bh, bw, self.cin)
        out = apply_layer(valid, imgs, self.contract)
        exact = apply_layer(self.pool, out, self.contract) if self.pool else out
        z = kind(self.first).accumulate(valid, imgs, self.contract).reshape(len(v), -1, self.first["out_channels"])
        shift = self.first["accum"]["frac"] - self.first["output"]["frac"]
        z = z * 2.0 ** -shift
        slack = 0.5 if shift > 0 else 0.0
        upper = np.maximum(z, 0).max(axis=1) + slack                      # >= the pooled output code
        minorants = [np.zeros_like(upper)]
        if first_hi.max() * 2.0 ** -shift - slack <= output_range(self.first["output"])[1]:   # no saturation
            minorants += [z.mean(axis=1) - slack] + [z[:, k] - slack for k in range(z.shape[1])]
        return {"exact": exact.reshape(len(v), -1).astype(np.float64), "upper": upper, "minorants": minorants}

    def majorants(self, verts: dict, sign: float) -> tuple[np.ndarray, np.ndarray]:
        """Per tap and second-layer channel, a convex function of the tap's pixels above ``sign`` times its term:
        each input the weight prefers high at its majorant, each it prefers low at the affine minorant that gives
        the least largest value. Returns (its values per vertex: taps_h x taps_w x vertices x C2, its largest
        value: taps_h x taps_w x C2)."""
        w = sign * self.weights()
        vals = np.empty((*self.taps, len(verts["upper"]), w.shape[-1]))
        for ty in range(self.taps[0]):
            for tx in range(self.taps[1]):
                wt = w[ty, tx]
                cands = np.stack([verts["upper"] @ np.maximum(wt, 0) + m @ np.minimum(wt, 0) for m in verts["minorants"]])
                pick = cands.max(axis=1).argmin(axis=0)                   # per channel, the tightest minorant
                vals[ty, tx] = np.take_along_axis(cands, pick[None, None, :], axis=0)[0]
        return vals, vals.max(axis=2)

    @property
    def patterns(self) -> int:
        """The binary patterns of one cell."""
        return 1 << (self.cell[0] * self.cell[1] * self.cin)

    @property
    def pixels(self) -> tuple[int, int]:
        """The field's size in pixels (rows, columns)."""
        return self.grid[0] * self.cell[0], self.grid[1] * self.cell[1]

    def _cell_bits(self, a: int, b: int) -> np.ndarray:
        """For cell (a, b) of a tap's block, the bit of the block's vertex index (:meth:`vertices`) that each bit of
        the cell's pattern sets (pattern bit ``(dy * cw + dx) * cin + c``: the pixel (dy, dx, c) of the cell)."""
        (bh, bw), (ch, cw), cin = self.block, self.cell, self.cin
        dy, dx, c = np.meshgrid(range(ch), range(cw), range(cin), indexing="ij")
        return (((a * ch + dy) * bw + b * cw + dx) * cin + c).reshape(-1)

    def _vertex_part(self, a: int, b: int, patterns: np.ndarray) -> np.ndarray:
        """The part of the block's vertex index that cell (a, b) holding each of ``patterns`` sets."""
        bits = self._cell_bits(a, b)
        return (((np.asarray(patterns)[..., None] >> np.arange(len(bits))) & 1) << bits).sum(axis=-1)

    def table(self, values: np.ndarray) -> np.ndarray:
        """A tap's term, given per vertex of its block (``values[v]``: bit ``(y * bw + x) * cin + c`` of ``v`` the
        pixel (y, x, c) at its maximum), as a table over its cells' patterns (one axis per cell, raster order)."""
        mh, mw = self.per_tap
        index = 0
        for a in range(mh):
            for b in range(mw):
                shape = [1] * (mh * mw)
                shape[a * mw + b] = self.patterns
                index = index + self._vertex_part(a, b, np.arange(self.patterns)).reshape(shape)
        return values[index]

    def vertex(self, tap: tuple[int, int], patterns: dict[tuple[int, int], int]) -> int:
        """The vertex of ``tap``'s block (its index in :meth:`vertices`) that the cells' ``patterns`` make."""
        mh, mw = self.per_tap
        return int(sum(self._vertex_part(a, b, patterns[(tap[0] + a, tap[1] + b)]) for a in range(mh) for b in range(mw)))

    def image(self, patterns: dict[tuple[int, int], int], top: int) -> np.ndarray:
        """The field's pixels (rows x columns x channels) for each cell's chosen pattern."""
        (ch, cw), cin = self.cell, self.cin
        out = np.zeros((*self.pixels, cin), np.int64)
        for (r, c), u in patterns.items():
            bits = (u >> np.arange(ch * cw * cin)) & 1
            out[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = bits.reshape(ch, cw, cin) * top
        return out


def field(contract) -> Field | None:
    """The receptive-field layout of the second weighted layer, where the network begins ``conv -> [max pool] ->
    conv`` on the pixels (a chain, the first layer with a fused ReLU) and a tap reads at most 16 pixels; else
    None. (:attr:`Field.gridded` says whether :func:`max_sum` can take it.)
    (Only the second convolution's first output position is laid out: with valid convolutions every position's
    field is the same problem.)"""
    weighted = contract.weighted()
    layers = contract.layers
    if len(weighted) < 2:
        return None
    first, second = weighted[0], weighted[1]
    i1, i2 = layers.index(first), layers.index(second)
    between = layers[i1 + 1:i2]
    chain = all(l.get("inputs", [None])[0] == (layers[k - 1]["name"] if k else "input") for k, l in enumerate(layers[:i2 + 1]))
    if (not chain or i1 != 0 or not kind(first).windowed or not kind(second).windowed or not first["output"].get("relu")
            or len(between) > 1 or any(l["type"] != "maxpool2d" for l in between)):
        return None
    f = Field(contract, first, between[0] if between else None, second, contract.input["shape"][-1])
    if f.block[0] * f.block[1] * f.cin > 16:
        return None
    return f


def max_sum(f: Field, tables: dict[tuple[int, int], np.ndarray]) -> tuple[float, dict[tuple[int, int], int]] | None:
    """The largest sum of the taps' ``tables`` (tap (ty, tx): a table over the cells (ty + a, tx + b)) over every
    pattern of every cell of the field, and the patterns that give it; None where an elimination's table would pass
    :data:`_MAX_TABLE` entries."""
    (mh, mw), (gh, gw) = f.per_tap, f.grid
    factors = []
    for (ty, tx), t in tables.items():
        cells = [(ty + a, tx + b) for a in range(mh) for b in range(mw)]
        factors.append((cells, np.asarray(t, np.float64)))
    order = [(r, c) for r in range(gh) for c in range(gw)]
    steps = []
    for v in order:
        mine = [fc for fc in factors if v in fc[0]]
        factors = [fc for fc in factors if v not in fc[0]]
        scope = sorted({c for cells, _ in mine for c in cells}, key=order.index)
        if f.patterns ** len(scope) > _MAX_TABLE:
            return None
        total = np.zeros([f.patterns] * len(scope))
        for cells, t in mine:
            # the factor's axes placed on the scope's, in the scope's order
            perm = sorted(range(len(cells)), key=lambda i: scope.index(cells[i]))
            shape = [1] * len(scope)
            for i in perm:
                shape[scope.index(cells[i])] = f.patterns
            total = total + np.transpose(t, perm).reshape(shape)
        axis = scope.index(v)
        steps.append((v, scope, total))
        rest = [c for c in scope if c != v]
        factors.append((rest, total.max(axis=axis)))
    best = float(sum(t for _, t in factors if not np.ndim(t)) if factors else 0.0)
    # the patterns, back from the last cell eliminated: each the best given those chosen after it
    chosen: dict[tuple[int, int], int] = {}
    for v, scope, total in reversed(steps):
        idx = tuple(chosen[c] if c != v else slice(None) for c in scope)
        chosen[v] = int(np.argmax(total[idx]))
    return best, chosen


def fitted_bound(f: Field, verts: dict, w: np.ndarray, target: float | None = None, rounds: int = 30) -> float | None:
    """A bound on the sum over the field's taps of their terms with weights ``w`` (taps_h x taps_w x C1), over
    every image: each tap's convex majorant (:meth:`Field.majorants`) with each input the weight prefers low at
    its own mixture of the affine minorants (weights ``lam`` summing to at most 1, the rest on 0). For any mixture
    the sum is convex on the field's pixel box, so :func:`max_sum` over its binary images bounds it; the mixtures
    are fitted to the whole field by cutting planes: each round's largest image is a cut (its value is linear in
    the mixtures), and a linear program picks, within a trust region about the best mixtures so far, those that
    make the largest cut least. Returns the least bound found; stops once it is below ``target``, once no mixture
    can bring it there (the program's optimum over every mixture, a lower limit on every bound of the family, is
    not below it) or after ``rounds`` rounds. None where :func:`max_sum` cannot run."""
    from scipy.optimize import linprog

    taps = [(ty, tx) for ty in range(f.taps[0]) for tx in range(f.taps[1])]
    high = {t: verts["upper"] @ np.maximum(w[t], 0) for t in taps}
    if len(verts["minorants"]) < 2:                            # (only 0: nothing to fit)
        top = max_sum(f, {t: f.table(high[t]) for t in taps})
        return None if top is None else top[0]
    z = np.stack(verts["minorants"][1:], axis=-1)               # vertices x C1 x pieces (0 takes the rest)
    c1, k = z.shape[1], z.shape[2]
    n = len(taps) * c1 * k
    low = {t: z * np.minimum(w[t], 0)[None, :, None] for t in taps}
    lam = best_lam = np.zeros(n)
    step = 0.5                              # the trust region about the best mixtures so far (each weight +- step)
    simplex = np.hstack([np.kron(np.eye(len(taps) * c1), np.ones((1, k))), np.zeros((len(taps) * c1, 1))])
    cuts, consts, best = [], [], np.inf
    for _ in range(rounds):
        mix = lam.reshape(len(taps), c1, k)
        tables = {t: f.table(high[t] + np.einsum("vck,ck->v", low[t], mix[i])) for i, t in enumerate(taps)}
        top = max_sum(f, tables)
        if top is None:
            return None
        if top[0] < best:
            best, best_lam, step = top[0], lam, min(1.0, step * 1.5)
        else:
            step = max(0.02, step / 2)
        if target is not None and best < target:
            break
        at = [f.vertex(t, top[1]) for t in taps]
        cuts.append(np.r_[np.stack([low[t][v] for t, v in zip(taps, at)]).reshape(-1), -1.0])
        consts.append(-sum(high[t][v] for t, v in zip(taps, at)))
        a_ub, b_ub = np.vstack([np.stack(cuts), simplex]), np.r_[consts, np.ones(len(taps) * c1)]
        cost = np.r_[np.zeros(n), 1.0]
        # the cuts' least largest value over every mixture: a lower limit on every bound this family can give
        floor = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(0, 1)] * n + [(None, None)], method="highs")
        if floor.status != 0 or (target is not None and floor.x[-1] >= target) or floor.x[-1] >= best - 1e-6:
            break
        # the next mixtures: the cuts' least within the trust region (Kelley's step alone jumps about)
        near = linprog(cost, A_ub=a_ub, b_ub=b_ub, method="highs",
                       bounds=[(max(0.0, v - step), min(1.0, v + step)) for v in best_lam] + [(None, None)])
        res = near if near.status == 0 else floor
        lam = np.clip(res.x[:n], 0, 1).reshape(len(taps) * c1, k)
        lam = (lam / np.maximum(lam.sum(axis=1, keepdims=True), 1.0)).reshape(-1)   # (a mixture, whatever the slack)
    return float(best)


def integer_program(f: Field, w: np.ndarray, bias: float, first_hi: np.ndarray, at_least: float | None = None,
                    pixels: np.ndarray | None = None, seconds: float = PROGRAM_SECONDS
                    ) -> tuple[str, float | None, np.ndarray | None] | None:
    """The largest of ``bias`` plus the sum over the field's taps of the weights ``w`` (taps_h x taps_w x C1) times
    the pooled first-layer codes there, over every image of the field, as a mixed-integer linear program (HiGHS):

    - each pixel an integer in [0, its maximum]; each term's pooled code ``P`` an integer in [0, the output's
      largest code] (the first layer cannot saturate: its accumulators at most ``first_hi``, else None);
    - a code the weight prefers low: ``P`` at least each of the pool's windows' rounded accumulator (``2**s P >=
      z + 2**(s-1) - (2**s - 1)`` for a right shift ``s``; ``z`` is linear in the pixels), which the golden code
      is, as integers; the maximum takes ``P`` down to that code;
    - a code the weight prefers high: ``P`` at most the largest of 0 and each window's rounding (``2**s P <= z +
      2**(s-1)``), a choice among them, written as the convex hull of its choices (one binary per choice and one
      copy of the tap's pixels per choice, which the choice's binary bounds): its linear relaxation is the term's
      concave envelope on the pixel box, so the search proves far more by bound than with big-M constraints.

    Every image with its golden codes is a solution of the program with the same value, and no solution's value
    passes the largest golden value: the program's maximum is the golden model's. With ``at_least``, only images
    reaching it count, and the first found is returned (a decision, far quicker than the maximum). ``pixels`` (the
    field's pixels x cin) fixes the image (to check the program against the golden model).

    Returns (``"found"``: an image reaching ``at_least`` or, without it, the largest; ``"none"``: no image reaches
    ``at_least``; ``"open"``: undecided within ``seconds``), the value, the field's image (pixels x cin); None
    where the program does not apply: a layer pads, the input is signed, or the first layer can saturate."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    first, contract = f.first, f.contract
    if (not f.gridded or first.get("padding", "valid") != "valid" or contract.input.get("signed")
            or (f.pool and f.pool.get("padding", "valid") != "valid")):
        return None
    shift = first["accum"]["frac"] - first["output"]["frac"]
    den, mult = 1 << max(shift, 0), 1 << max(-shift, 0)
    half = den >> 1 if shift > 0 else 0
    code_top = output_range(first["output"])[1]
    if (int(first_hi.max()) * mult + half) // den > code_top:
        return None
    top = (1 << contract.input["bits"]) - 1
    (kh, kw), (sh, sw) = kernel_size(first["kernel"]), conv_stride(first)
    ph, pw = kernel_size(f.pool["pool"]) if f.pool else (1, 1)
    w1 = kind(first).full_matrix(contract.weights[first["name"]]).astype(np.int64).reshape(kh, kw, f.cin, -1)
    b1 = contract.biases[first["name"]].astype(np.int64)
    (fh, fw), cin = f.pixels, f.cin

    def px(y, x, c):                                           # a pixel's variable
        return (y * fw + x) * cin + c

    n_px = fh * fw * cin
    free = itertools.count(n_px)                               # the variables after the pixels, in turn
    rows, cols_, vals, lo, hi = [], [], [], [], []

    def new():
        return next(free)

    def row(coefs: dict, low, high):
        rows.extend([len(lo)] * len(coefs))
        cols_.extend(coefs)
        vals.extend(coefs.values())
        lo.append(low)
        hi.append(high)

    kinds, objective = {}, {}                                  # variable -> (integer, upper bound)
    for y in range(fh):
        for x in range(fw):
            for c in range(cin):
                kinds[px(y, x, c)] = (1, top)
    for ty in range(f.taps[0]):
        for tx in range(f.taps[1]):
            # the pool's windows under this tap: window k's accumulator is z = sum(pixel * weight) + b1
            windows = [((ty * ph + dy) * sh, (tx * pw + dx) * sw) for dy in range(ph) for dx in range(pw)]
            block = sorted({(y0 + a, x0 + b, c) for y0, x0 in windows for a in range(kh) for b in range(kw)
                            for c in range(cin)})
            for ch in np.flatnonzero(w[ty, tx]):
                p = new()
                kinds[p] = (1, code_top)
                objective[p] = float(w[ty, tx, ch])
                taps = [{(y0 + a, x0 + b, c): int(w1[a, b, c, ch]) for a in range(kh) for b in range(kw)
                         for c in range(cin)} for y0, x0 in windows]
                if w[ty, tx, ch] < 0:
                    for z in taps:
                        row({p: den, **{px(*q): -mult * v for q, v in z.items()}},
                            mult * int(b1[ch]) + half - (den - 1), np.inf)
                    continue
                choice = [new() for _ in range(len(taps) + 1)]            # each window, and 0 (the ReLU)
                for b in choice:
                    kinds[b] = (1, 1)
                row({b: 1 for b in choice}, 1, 1)
                copies = {q: [new() for _ in choice] for q in block}
                for q, cs in copies.items():
                    row({px(*q): 1, **{c: -1 for c in cs}}, 0, 0)             # the pixel is the sum of its copies
                    for c, b in zip(cs, choice):
                        kinds[c] = (0, top)
                        row({c: 1, b: -top}, -np.inf, 0)                      # a copy is 0 unless chosen
                bound = {p: den}
                for k, z in enumerate(taps):
                    for q, v in z.items():
                        bound[copies[q][k]] = -mult * v
                    bound[choice[k]] = -(mult * int(b1[ch]) + half)
                row(bound, -np.inf, 0)
    n = next(free)                                             # (the number of variables)
    cost = np.zeros(n)
    for p, v in objective.items():
        cost[p] = -v
    if at_least is not None:
        row(dict(objective), at_least - bias, np.inf)
    integrality = np.zeros(n)
    lower, upper = np.zeros(n), np.zeros(n)
    for v, (integral, ub) in kinds.items():
        integrality[v], upper[v] = integral, ub
    if pixels is not None:
        lower[:n_px] = upper[:n_px] = np.asarray(pixels, np.float64).reshape(-1)
    a = coo_matrix((vals, (rows, cols_)), shape=(len(lo), n)).tocsr()
    # (a decision stops at its first image; a maximum is proven to the last integer, no relative gap allowed)
    options = {"time_limit": float(seconds), "mip_rel_gap": 1.0 if at_least is not None else 0.0}
    res = milp(cost, constraints=LinearConstraint(a, lo, hi), integrality=integrality, bounds=Bounds(lower, upper),
               options=options)
    if res.status == 2:
        return "none", None, None
    if res.x is None:
        return "open", None, None
    image = np.rint(res.x[:n_px]).astype(np.int64).reshape(fh, fw, cin)
    return ("found" if res.status == 0 or at_least is not None else "open"), float(bias - res.fun), image
