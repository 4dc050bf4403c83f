"""The layer program: how each layer of a contract is tiled over an R x C array.

Pure Python, shared by the hardware generator (ROM images, controller
constants) and the analytic cycle model, so both describe one schedule.

Activation buffers hold words of C bytes: the word at ``ctile * npix + pixel``
holds channels ``ctile*C .. ctile*C + C-1`` of that pixel (HWC order within a
pixel, so Keras' flatten order is just an address pattern). There are three:
the two ping-pong buffers 0 and 1, between which the layers of a chain
alternate, and the image buffer (:data:`IMAGE`), which the first layer reads.
A network with a residual add has a fourth, activation buffer 3, where the
add's other input waits while its branch is computed (each op writes the
lowest-numbered activation buffer it does not read that holds nothing still
to be read: :class:`_Buffers`); the add itself is fused into the write-back of
the convolution just before it (:func:`_fuse_add`). The image
buffer holds two images (slots ``image_stride`` words apart), so the host
loads the next image while this one is computed.

A buffer is kept in one copy when every op that reads it finds all the rows
of each row tile in one word (the layer's input channels come C to a word
and its kept rows are whole words, as in every layer with at least R input
channels): the feeder reads that word once and each row picks its lane.
Otherwise (a one-channel image read by a 3x3 kernel, or rows that matrix
pruning removed one by one) the buffer is replicated ``R`` times, so the R
rows of a beat read R different words in one cycle (``Program.copies``).

A matmul op (conv or dense) runs folds in the order ``for ct: for rt:``,
streaming its M output positions through the array once per fold. Row ``r`` of
the layer's matrix reads channel ``c`` at pixel offset ``off`` from the output
position's base pixel: the row table holds, per row tile, R entries
(word offset, lane, valid). Rows that matrix-based pruning dropped
(``rows_kept`` in the contract) are simply absent from the table and from the
weight tiles, so a pruned layer is a smaller matrix with fewer tiles.

A depthwise convolution is grouped where the array has at least as many rows
as columns (:func:`_depthwise_op`): each column tile (C channels) has row tiles
of its own, one per kernel tap, holding that tap of its own C channels on the
tile's diagonal, so it runs kh*kw folds per column tile. (With more columns
than rows it is the convolution of its block-diagonal matrix, zeros gated.)

Pooling (max or average, over any window) that directly follows
a convolution is fused into it (``MatmulOp.window`` beyond 1 x 1): the convolution
walks its output positions window by window (``ph x pw`` consecutive
positions per pooled output, row by row inside a window), the array's
bottom keeps the running maximum (or sum) of the requantized words and
writes one word per window (an average: the sum divided as the contract says), and the positions that
pooling would discard (the ragged last rows and columns) are never
computed. A pooling layer with no convolution before it stays a
:class:`PoolOp` of its own.

A strided convolution's base pixel is (output y times its vertical stride, x times its horizontal one). With
``same`` padding a row's offset is taken from the tap's position relative to
the padded corner (``(ky - pad_top) * w + kx - pad_left``, negative on the
top or left), and the feeder checks each row's tap against the map's edges
at the position (:attr:`MatmulOp.padded`): a tap on the padding reads
nothing and feeds a zero. No padded map is ever stored.

A one-channel input image would fill one lane of each C-byte word and waste
the rest, so it is packed: ``Program.image_pack`` (P, the largest power of
two <= C) pixels per word, pixel ``p`` in word ``p // P``, lane ``p % P``.
The first layer's row table then holds plain pixel offsets; the feeder
splits ``base + offset`` into word and lane at run time. Later layers (and
images with more channels) keep one pixel per word.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from prunehw.core.config import ArrayConfig
from prunehw.core.errors import ConfigError
from prunehw.core.geometry import conv_stride, kernel_size
from prunehw.core.graph import INPUT
from prunehw.export.contract import conv_geometry
from prunehw.export.kinds import kind as contract_kind

__all__ = ["IMAGE", "MatmulOp", "PoolOp", "Program", "build_program"]

#: The image buffer's index (``in_buf`` of the first op); 0 and 1 are the ping-pong buffers.
IMAGE = 2
#: The activation buffers, in the order they are taken: the ping-pong pair, then a third where a residual add's
#: other input waits while the branch is computed
ACT_BUFFERS = (0, 1, 3)


class _Shapes:
    """Pixel counts of an op's input and output tensors (H x W x C)."""

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]

    @property
    def in_pix(self) -> int:
        return self.in_shape[0] * self.in_shape[1]

    @property
    def out_pix(self) -> int:
        return self.out_shape[0] * self.out_shape[1]


@dataclass
class MatmulOp(_Shapes):
    name: str
    kind: str                 # conv2d | dense
    in_buf: int
    out_buf: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    positions: int            # M: output pixels (1 for dense)
    rows: int                 # kept rows K
    cols: int                 # N
    n_rt: int
    n_ct: int
    row_table: list[list[tuple[int, int, int]]]   # per rt: R x (word_offset, lane, valid)
    tiles: list[np.ndarray]   # per fold (ct-major): R x C int weights
    bias: list[np.ndarray]    # per ct: C int biases
    in_signed: bool
    acc_frac: int
    out: dict
    last: bool
    macs_per_fold: list[int] = field(default_factory=list)
    window: tuple[int, int] = (1, 1)                 # fused pooling window (height, width); (1, 1): none
    pool_avg: bool = False    # the fused pooling averages (else it takes the maximum)
    conv_shape: tuple[int, int, int] | None = None   # the convolution's own output (before fused pooling)
    stride: tuple[int, int] = (1, 1)                 # (vertical, horizontal)
    pad: tuple[int, int] = (0, 0)                    # zero rows on top, zero columns on the left ("same")
    row_taps: list[list[tuple[int, int]]] = field(default_factory=list)   # per rt: R x (ky, kx) of each row
    kernel: tuple[int, int] = (1, 1)                 # (kh, kw)
    weight_bits: int = 8      # this layer's weight width (the ROM of that width holds its tiles)
    #: each column tile has row tiles of its own (``row_table`` and ``row_taps`` hold ``n_ct * n_rt`` entries, column
    #: tile major): a depthwise convolution, whose column tile ct reads only its own channels
    grouped: bool = False
    #: a residual Add fused into the write-back (the contract's ``add`` entry), the other input read from buffer
    #: ``short_buf`` at the output word's address; None: none
    add: dict | None = None
    short_buf: int = -1

    def row_tile(self, ct: int, rt: int) -> int:
        """The index in ``row_table`` (and ``row_taps``) of fold (ct, rt)'s row tile."""
        return ct * self.n_rt + rt if self.grouped else rt

    @property
    def padded(self) -> bool:
        """Whether some tap of some computed position falls on zero padding (``same`` padding), so the feeder
        must check each row's tap against the map's edges."""
        if self.kind != "conv2d":
            return False
        (wh, ww) = self.window
        hc, wc = self.out_shape[0] * wh, self.out_shape[1] * ww
        (h, w), (pt, pl), (sh, sw), (kh, kw) = self.in_shape[:2], self.pad, self.stride, self.kernel
        return pt > 0 or pl > 0 or (hc - 1) * sh + kh - pt > h or (wc - 1) * sw + kw - pl > w

    def positions_yx(self) -> list[tuple[int, int]]:
        """The (y, x) of the convolution's output at each computed position, in the order the controller walks
        them (window by window with fused pooling)."""
        (wh, ww), (ph, pw) = self.window, self.out_shape[:2]
        return [(py * wh + dy, px * ww + dx) for py in range(ph) for px in range(pw) for dy in range(wh) for dx in range(ww)]

    def base_pixels(self) -> list[int]:
        """The input pixel of kernel tap (0, 0) at each position, before padding (so a padded convolution's
        taps add ``(ky - pad_top) * w + kx - pad_left``), in the order the controller walks them."""
        w, (sh, sw) = self.in_shape[1], self.stride
        return [y * sh * w + x * sw for y, x in self.positions_yx()]

    def in_bounds(self, position: tuple[int, int], tap: tuple[int, int]) -> bool:
        """Whether kernel tap (ky, kx) at output ``position`` falls on the map, not on its zero padding."""
        (y, x), (ky, kx) = position, tap
        iy, ix = y * self.stride[0] + ky - self.pad[0], x * self.stride[1] + kx - self.pad[1]
        return 0 <= iy < self.in_shape[0] and 0 <= ix < self.in_shape[1]


@dataclass
class PoolOp(_Shapes):
    name: str
    in_buf: int
    out_buf: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    window: tuple[int, int]   # (height, width)
    n_ct: int
    signed: bool
    avg: bool = False         # average (the sum, divided as the contract says) instead of maximum


@dataclass
class Program:
    rows: int
    cols: int
    acc_bits: int
    ops: list
    buf_depth: tuple[int, ...]   # words of buffers 0, 1, of one image (IMAGE) and of buffer 3 where one is used
    input_shape: tuple[int, int, int]
    n_logits: int
    logit_frac: int
    image_pack: int = 1       # input pixels per activation word (1: one pixel per word)
    copies: tuple[int, ...] = (1, 1, 1)   # copies of each buffer (1, or R when rows gather from several words)
    weight_bits: int = 8      # the widest layer's weights (each width has a weight ROM of R x C weights a word)
    act_bits: int = 8         # the widest value written to the ping-pong buffers (their lane width)

    def matmuls(self) -> list[MatmulOp]:
        return [o for o in self.ops if isinstance(o, MatmulOp)]

    @property
    def image_stride(self) -> int:
        """Words from one image slot to the next: a power of two, so the slot is the address's top bit."""
        return 1 << max(1, (self.buf_depth[IMAGE] - 1).bit_length())


def _one_word_tiles(op) -> bool:
    """Whether every row tile of ``op`` reads all its valid rows from one word of its input buffer."""
    if not isinstance(op, MatmulOp):
        return True                     # pooling reads one word per cycle
    return all(len({off for off, _, v in row if v}) <= 1 for row in op.row_table)


def _copies(ops, R: int, packed: bool, n_buf: int = 3) -> tuple[int, ...]:
    out = []
    for b in range(n_buf):
        readers = [o for o in ops if o.in_buf == b]
        # (a packed image splits base + offset into word and lane at run time: one word only if every offset is equal)
        one = all(_one_word_tiles(o) for o in readers) and not (packed and b == IMAGE and
                                                                any(isinstance(o, MatmulOp) for o in readers))
        out.append(1 if one else R)
    return tuple(out)


def _ct(channels: int, C: int) -> int:
    return max(1, math.ceil(channels / C))


def _conv_rows(layer: dict, kept: np.ndarray, shape: tuple, C: int):
    """A convolution's geometry and row entries: (output shape before pooling, (pad top, left), per kept row
    (word offset from the position's base pixel, lane), per kept row its tap (ky, kx))."""
    h, w, c = shape
    (kh, kw) = kernel_size(layer["kernel"])
    oh, ow, pt, pl = conv_geometry(h, w, (kh, kw), layer.get("stride", 1), layer.get("padding", "valid"))
    entries, taps = [], []
    for r in kept:
        tap, ch = divmod(int(r), c)
        ky, kx = divmod(tap, kw)
        # (negative for a tap on the top or left padding: such a tap is masked where it falls off the map)
        entries.append(((ch // C) * h * w + (ky - pt) * w + kx - pl, ch % C))
        taps.append((ky, kx))
    return (oh, ow), (pt, pl), entries, taps


def _dense_rows(layer: dict, kept: np.ndarray, shape: tuple, C: int):
    """A dense layer's (one output position, no padding, per kept row its (word, lane) in the flattened input)."""
    h, w, c = shape
    entries = [((ch // C) * h * w + pix, ch % C) for pix, ch in (divmod(int(r), c) for r in kept)]
    return (1, 1), (0, 0), entries, [(0, 0)] * len(kept)


#: the matrix kinds' row geometry (a convolution's windows, a dense layer's flattened input)
_ROWS = {"conv2d": _conv_rows, "depthwise2d": _conv_rows, "dense": _dense_rows}


def _matmul_op(layer: dict, contract, shape: tuple, buf: int, ops: list, R: int, C: int) -> MatmulOp:
    W, B = contract.weights[layer["name"]], contract.biases[layer["name"]]
    kind = layer["type"]
    if kind == "depthwise2d" and C <= R:
        return _depthwise_op(layer, contract, shape, buf, R, C)
    if kind == "depthwise2d":
        # (on an array with more columns than rows) mapped as the convolution with its block-diagonal matrix (export.kinds): every channel's taps in the rows,
        # its output in its own column, zeros (gated, not multiplied) elsewhere; the same integers, 1/C of the
        # array's products doing work
        W, kind = contract_kind(layer).full_matrix(W), "conv2d"
    kept = np.asarray(layer.get("rows_kept", range(W.shape[0])), dtype=np.int64)
    n = W.shape[1]
    (oh, ow), pad, entries, taps = _ROWS[kind](layer, kept, shape, C)
    out = (oh, ow, n)
    K = len(kept)
    n_rt, n_ct = max(1, math.ceil(K / R)), _ct(n, C)
    table, row_taps = [], []
    for rt in range(n_rt):
        table.append([(*entries[rt * R + i], 1) if rt * R + i < K else (0, 0, 0) for i in range(R)])
        row_taps.append([taps[rt * R + i] if rt * R + i < K else (0, 0) for i in range(R)])
    Wk = W[kept]
    tiles, macs = [], []
    for ct in range(n_ct):
        for rt in range(n_rt):
            tile = np.zeros((R, C), dtype=np.int64)
            blk = Wk[rt * R:(rt + 1) * R, ct * C:(ct + 1) * C]
            tile[: blk.shape[0], : blk.shape[1]] = blk
            tiles.append(tile)
            macs.append(blk.shape[0] * blk.shape[1])
    return MatmulOp(layer["name"], kind, buf, -1, shape, out, out[0] * out[1], K, n, n_rt, n_ct, table,
                    tiles, _biases(B, n_ct, C), layer["input"]["signed"], layer["accum"]["frac"], layer["output"],
                    layer is contract.weighted()[-1], macs, stride=conv_stride(layer), pad=pad, row_taps=row_taps,
                    kernel=kernel_size(layer.get("kernel", 1)), weight_bits=layer["weight"]["bits"])


def _biases(B: np.ndarray, n_ct: int, C: int) -> list[np.ndarray]:
    """Per column tile, its C biases (zeros past the last column)."""
    out = []
    for ct in range(n_ct):
        bv = np.zeros(C, dtype=np.int64)
        blk = B[ct * C:(ct + 1) * C]
        bv[: len(blk)] = blk
        out.append(bv)
    return out


def _depthwise_op(layer: dict, contract, shape: tuple, buf: int, R: int, C: int) -> MatmulOp:
    """A depthwise convolution on an array with at least as many rows as columns, grouped: column tile ct computes
    channels ct*C .. ct*C + C-1, and its row tile t holds kernel tap t of exactly those channels (row i: channel
    ct*C + i, whose weight sits on the tile's diagonal, in column i). So a fold is one tap of one word of channels,
    read in one word; every fold does C useful products (the diagonal) of the R x C array's, and the layer takes
    kh*kw folds per column tile instead of the (kh*kw*channels / R) of its block-diagonal matrix."""
    W, B = contract.weights[layer["name"]], contract.biases[layer["name"]]
    taps, c = W.shape
    (oh, ow), pad, entries, tap_of = _conv_rows(layer, np.arange(taps * c), shape, C)
    n_ct = _ct(c, C)
    table, row_taps, tiles, macs = [], [], [], []
    for ct in range(n_ct):
        chans = range(ct * C, min(c, ct * C + C))
        for t in range(taps):
            rows = [t * c + ch for ch in chans]
            table.append([(*entries[r], 1) for r in rows] + [(0, 0, 0)] * (R - len(rows)))
            row_taps.append([tap_of[r] for r in rows] + [(0, 0)] * (R - len(rows)))
            tile = np.zeros((R, C), dtype=np.int64)
            tile[np.arange(len(rows)), np.arange(len(rows))] = W[t, list(chans)]
            tiles.append(tile)
            macs.append(len(rows))
    return MatmulOp(layer["name"], "conv2d", buf, -1, shape, (oh, ow, c), oh * ow, taps * c, c, taps, n_ct,
                    table, tiles, _biases(B, n_ct, C), layer["input"]["signed"], layer["accum"]["frac"],
                    layer["output"], layer is contract.weighted()[-1], macs, stride=conv_stride(layer), pad=pad,
                    row_taps=row_taps, kernel=kernel_size(layer["kernel"]), weight_bits=layer["weight"]["bits"],
                    grouped=True)


def _pool_op(layer: dict, contract, shape: tuple, buf: int, ops: list, R: int, C: int,
             fusable=lambda op: True) -> PoolOp | None:
    """A pooling's op; or None where it is fused into the convolution just before it, which then computes only
    the positions the windows cover."""
    h, w, c = shape
    (ph, pw), avg = kernel_size(layer["pool"]), layer["type"] == "avgpool2d"
    out = (h // ph, w // pw, c)
    prev = ops[-1] if ops else None
    # (fused only into the convolution that computed its input, for it alone, before any add)
    if isinstance(prev, MatmulOp) and prev.kind == "conv2d" and prev.window == (1, 1) and not prev.last and \
            prev.add is None and fusable(prev):
        prev.window, prev.pool_avg, prev.conv_shape, prev.out_shape = (ph, pw), avg, prev.out_shape, out
        prev.positions = out[0] * ph * out[1] * pw
        return None
    return PoolOp(layer["name"], buf, -1, shape, out, (ph, pw), _ct(c, C), layer["input"]["signed"], avg)


#: how each contract kind compiles to an op (None: no op of its own; a flatten is only an address pattern)
_COMPILE = {"conv2d": _matmul_op, "depthwise2d": _matmul_op, "dense": _matmul_op, "maxpool2d": _pool_op,
            "avgpool2d": _pool_op, "flatten": None}


class _Buffers:
    """Which buffer holds each layer's output, and which layers have still to read it: every op writes the
    lowest-numbered activation buffer (:data:`ACT_BUFFERS`) that it does not read and that holds nothing still to be
    read. A chain thus alternates 0 and 1 (the image's first reader writes 0); a residual block needs a third
    while the shortcut waits for its add."""

    def __init__(self, contract):
        self.graph = contract.graph
        self.where: dict[str, tuple[int, tuple]] = {}      # layer -> (its buffer, its shape)
        self.pending: dict[int, set[str]] = {b: set() for b in (*ACT_BUFFERS, IMAGE)}

    def readers(self, name: str) -> set[str]:
        """The layers that read ``name``'s output through addresses only (a flatten is no op of its own)."""
        out = set()
        for r in self.graph.readers(name):
            out |= self.readers(r.name) if r.kind == "flatten" else {r.name}
        return out

    def put(self, name: str, buf: int, shape: tuple) -> None:
        self.where[name] = (buf, shape)
        self.pending[buf] = self.readers(name)

    def alias(self, name: str, of: str, shape: tuple | None = None) -> None:
        """``name``'s output is the value ``of`` holds (a flatten; a pooling or add fused into the op of ``of``)."""
        buf, was = self.where[of]
        self.where[name] = (buf, was if shape is None else shape)
        self.pending[buf] = (self.pending[buf] - {name}) | self.readers(name)

    def read(self, name: str, src: str) -> None:
        self.pending[self.where[src][0]].discard(name)

    def free(self, *busy: int) -> int:
        b = next((b for b in ACT_BUFFERS if b not in busy and not self.pending[b]), None)
        if b is None:
            raise ValueError("the network needs more than three activation buffers at once (more than one value "
                             "waiting for a later add)")
        return b


def build_program(contract, array: ArrayConfig) -> Program:
    """Tile every layer of ``contract`` over ``array``; raises ValueError if the array cannot hold it."""
    R, C = array.rows, array.cols
    shape = tuple(contract.input["shape"])
    if len(shape) == 1:
        shape = (1, 1, shape[0])
    if shape[2] > C:
        raise ValueError(f"the input has {shape[2]} channels but an array with {C} columns holds at most {C}; use more array columns")
    first = next((l for l in contract.layers if _COMPILE[l["type"]]), None)
    pack = 1
    if shape[2] == 1 and first is not None and _ROWS.get(first["type"]) is _conv_rows and C > 1:
        pack = 1 << (C.bit_length() - 1)                    # the largest power of two <= C
    image = shape
    bufs = _Buffers(contract)
    bufs.put(INPUT, IMAGE, shape)
    ops: list = []
    produced: dict[str, str] = {}                         # op name -> the layer whose value it now writes
    weighted = contract.weighted()
    acc_bits = max(l["accum"]["bits"] for l in weighted)

    def sole_reader(op, name: str) -> bool:
        """Whether layer ``name`` is the only reader of what ``op`` (the last op) writes."""
        return bufs.readers(produced[op.name]) == {name}

    for layer in contract.layers:
        name, srcs = layer["name"], layer["inputs"]
        kind = layer["type"]
        if kind == "add":
            _fuse_add(layer, ops, bufs, produced, sole_reader)
            continue
        buf, shape = bufs.where[srcs[0]]
        if len(shape) == 1:
            shape = (1, 1, shape[0])
        compile_ = _COMPILE[kind]
        if compile_ is None:            # (a flatten: an address pattern over its input's words, its shape kept)
            bufs.alias(name, srcs[0])
            continue
        op = compile_(layer, contract, shape, buf, ops, R, C, **(
            {"fusable": lambda o: produced[o.name] == srcs[0] and sole_reader(o, name)} if compile_ is _pool_op else {}))
        if op is None:                  # (a pooling fused into the op before it)
            bufs.alias(name, produced[ops[-1].name], ops[-1].out_shape)
            produced[ops[-1].name] = name
            continue
        bufs.read(name, srcs[0])
        op.out_buf = bufs.free(buf)
        bufs.put(name, op.out_buf, op.out_shape)
        produced[op.name] = name
        ops.append(op)
    n_buf = 4 if any(o.out_buf == 3 for o in ops) else 3      # (the third activation buffer only where used)
    depth = [0, 0, -(-image[0] * image[1] // pack) * _ct(image[2], C)] + [0] * (n_buf - 3)
    for op in ops:
        depth[op.out_buf] = max(depth[op.out_buf], op.out_pix * _ct(op.out_shape[2], C))
    if not ops or not isinstance(ops[-1], MatmulOp) or not ops[-1].last:
        raise ValueError("the network must end with a conv or dense layer (the logits)")
    last = ops[-1]
    in_shape = tuple(contract.input["shape"])
    # lane width of the activation buffers: every hidden layer's output (a pooling pass keeps its input's format)
    by_name = {l["name"]: l for l in contract.layers}
    written = [by_name[o.name]["input"]["bits"] if isinstance(o, PoolOp) else (o.add["output"] if o.add else o.out)["bits"]
               for o in ops if not (isinstance(o, MatmulOp) and o.last)]
    return Program(R, C, acc_bits, ops, tuple(max(d, 1) for d in depth),
                   in_shape if len(in_shape) == 3 else (1, 1, in_shape[0]), last.cols, last.acc_frac, pack,
                   _copies(ops, R, pack > 1, n_buf), weight_bits=max(l["weight"]["bits"] for l in weighted),
                   act_bits=max(written, default=8))


def _fuse_add(layer: dict, ops: list, bufs: _Buffers, produced: dict, sole_reader) -> None:
    """An add fused into the write-back of the op just before it, which computed one of its inputs for it alone;
    the other input is read from the buffer that holds it, at each output word's address."""
    name, srcs = layer["name"], layer["inputs"]
    prev = ops[-1] if ops else None
    mine = next((i for i, s in enumerate(srcs) if prev is not None and produced.get(prev.name) == s), None)
    if not isinstance(prev, MatmulOp) or mine is None or prev.last or prev.add is not None or \
            prev.window != (1, 1) or not sole_reader(prev, name):
        raise ConfigError(f"add {name!r}: the accelerator adds at the write-back of the convolution that computes "
                          f"one of its inputs just before it, for it alone; its inputs {srcs} are not so")
    other = srcs[1 - mine]
    short_buf = bufs.where[other][0]
    if short_buf in (prev.in_buf, IMAGE):
        raise ConfigError(f"add {name!r}: its other input {other!r} is the input of the convolution it would be "
                          f"added in ({prev.name!r}) or the image; the accelerator reads the two from different "
                          f"activation buffers (put a convolution on the shortcut)")
    prev.add = {**layer, "mine": mine}
    prev.short_buf = short_buf
    bufs.read(name, other)
    bufs.alias(name, produced[prev.name])
    produced[prev.name] = name
