"""The contract's layer kinds, one handler each: the export package's one home per kind.

A handler knows, for its kind (the contract entry's ``type``): what a valid entry says (:meth:`Kind.check`, for
``load_contract``/``save_contract``), the Keras layer it is read from (:attr:`Kind.keras`, :meth:`Kind.entry` for
``quantize``; a weighted kind's formats are chosen by ``quantize`` itself), its golden integer arithmetic
(:meth:`Kind.apply`), QAT's forward step (:meth:`Kind.qat_forward`), the float mirror the stimulus search climbs
(:meth:`Kind.float_apply`), and its hls4ml precision entry and the Keras geometry hls4ml will follow
(:meth:`Kind.hls_precision`, :meth:`Kind.keras_mismatch`). The modules that run a whole contract (golden,
contract, hls, quantize, qat, the stimulus search) look a layer's handler up in :data:`KINDS` instead of testing
its type.

A new kind is one class here with ``@register`` (plus its model side in ``model/kinds.py``, its program op in
``hw/compile/program.py``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from prunehw.core.geometry import conv_stride, kernel_size, written_size
from prunehw.export.contract import PADDINGS, conv_geometry, fixed_type, output_range

__all__ = ["KINDS", "Kind", "add_frac", "average_shift", "fake_quant", "fmt_type", "kernel_taps", "keras_kind", "kind", "matmul",
           "register", "requantize", "weighted"]


def _positive(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _size_ok(v) -> bool:
    """Whether a kernel or window is written as :func:`~prunehw.core.geometry.written_size` writes it: an integer
    >= 1, or a pair of them that differ."""
    return _positive(v) or isinstance(v, list) and len(v) == 2 and all(map(_positive, v)) and v[0] != v[1]


def kernel_taps(layer: dict) -> int:
    """A convolution entry's taps per input channel (kh * kw)."""
    kh, kw = kernel_size(layer["kernel"])
    return kh * kw


def fmt_type(f: dict, **kw) -> str:
    """The hls4ml type string of a contract format ``f`` {bits, frac, signed}."""
    return fixed_type(f["bits"], f["frac"], signed=f["signed"] if "signed" in f else True, **kw)


def requantize(acc: np.ndarray, acc_frac: int, out: dict) -> np.ndarray:
    """ReLU (if ``out['relu']``), round half up to ``out['frac']`` (add half an LSB, floor), saturate to ``out['bits']``
    and to the ReLU's cap (relu6) if it has one (:func:`~prunehw.export.contract.output_range`)."""
    acc = np.asarray(acc, dtype=np.int64)
    if out.get("relu"):
        acc = np.maximum(acc, 0)
    shift = acc_frac - out["frac"]
    if shift > 0:
        q = (acc + (1 << (shift - 1))) >> shift
    else:
        q = acc << (-shift)
    return np.clip(q, *output_range(out))


def matmul(a: np.ndarray, w: np.ndarray, acc_bits: int) -> np.ndarray:
    """``a @ w`` exactly: in float64 BLAS while the accumulator fits 53 bits (every product and partial sum an exact
    integer), in int64 otherwise."""
    if acc_bits <= 53:
        return np.rint(a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return a @ w


def fake_quant(x, frac: int, lo: float | None, hi: float | None, half_up: bool):
    """QAT's quantizer: ``x`` on the grid 2**-frac (round half up, or to even), clipped to integers lo..hi; the
    gradient passes straight through the rounding and is zero outside the range."""
    import tensorflow as tf

    scale = 2.0 ** frac
    if lo is not None:
        x = tf.clip_by_value(x, lo / scale, hi / scale)
    q = tf.floor(x * scale + 0.5) if half_up else tf.round(x * scale)
    return x + tf.stop_gradient(q / scale - x)


class Kind:
    """One contract kind. ``name``: the entry's ``type``; ``keras``: the Keras class names read as it;
    ``weighted``: it has a weight matrix and a bias (and an accumulator and output format)."""

    name: str = ""
    keras: tuple[str, ...] = ()
    weighted: bool = False

    def check(self, layer: dict, bad) -> None:
        """Call ``bad(message)`` for what a valid entry of this kind may not say."""

    def entry(self, klayer, fmt: dict) -> dict:
        """The contract entry of the (unweighted) Keras layer ``klayer`` whose input has the format ``fmt``."""
        return {"name": klayer.name, "type": self.name, "input": dict(fmt)}

    def qat_forward(self, klayer, a, frac: int):
        """QAT's forward pass through the (unweighted) Keras layer ``klayer`` on activations ``a`` whose format has
        ``frac`` fractional bits: the contract's arithmetic, differentiable (``export/qat.py``)."""
        return klayer(a)

    def out_shape(self, layer: dict, in_shapes: list[tuple]) -> tuple:
        """The shape of the layer's output (batch left out) on inputs of ``in_shapes``: what its entry's ``shape``
        must say."""
        raise NotImplementedError

    def apply(self, layer: dict, a: np.ndarray, contract) -> np.ndarray:
        """The layer on the integer input ``a`` (N, ...), as the hardware computes it."""
        raise NotImplementedError

    def evaluate(self, layer: dict, args: list, contract) -> np.ndarray:
        """The layer on the integer values of its ``inputs`` (in order): :meth:`apply` on the one a kind reads,
        unless it reads more (``add``)."""
        return self.apply(layer, args[0], contract)

    def float_apply(self, layer: dict, a, contract):
        """The layer on real-valued activations ``a`` in TensorFlow, without rounding (the stimulus search's
        differentiable mirror of the contract, ``sim/stimulus.py``)."""
        raise NotImplementedError

    def float_evaluate(self, layer: dict, args: list, contract):
        """:meth:`float_apply` on the real values of its ``inputs`` (in order), as :meth:`evaluate` is to
        :meth:`apply`."""
        return self.float_apply(layer, args[0], contract)

    def hls_precision(self, layer: dict) -> dict:
        """The layer's hls4ml ``Precision`` entry: by default its result in its input's format."""
        return {"result": fmt_type(layer["input"])}

    def keras_mismatch(self, layer: dict, klayer) -> str | None:
        """How the Keras layer ``klayer`` handed to hls4ml computes otherwise than ``layer`` says, or None."""
        return None


#: the contract's kinds by ``type``
KINDS: dict[str, Kind] = {}


def register(cls: type[Kind]) -> type[Kind]:
    KINDS[cls.name] = cls()
    return cls


def kind(layer: dict) -> Kind:
    """The handler of a contract entry."""
    return KINDS[layer["type"]]


def weighted(layer: dict) -> bool:
    """Whether a contract entry has a weight matrix (conv2d, dense)."""
    return KINDS[layer["type"]].weighted


def keras_kind(klayer) -> Kind | None:
    """The handler of the kind a Keras layer is read as, or None (ReLU is fused into the layer before it; the
    flow's models hold nothing else)."""
    return next((k for k in KINDS.values() if type(klayer).__name__ in k.keras), None)


class _Weighted(Kind):
    weighted = True

    def out_shape(self, layer, in_shapes):
        return (layer["out_channels"],)

    def geometry(self, klayer) -> dict:
        """The entry's keys that say how the Keras layer ``klayer`` applies its matrix (none for dense)."""
        return {}

    #: whether its matrix multiplies windows of the input (a convolution's), rows ordered (ky, kx, c)
    windowed = False

    def matrix(self, kernel: np.ndarray) -> np.ndarray:
        """The contract's weight matrix (rows x columns) of a Keras kernel: its last axis the columns."""
        return kernel.reshape(-1, kernel.shape[-1])

    def full_matrix(self, w: np.ndarray) -> np.ndarray:
        """The contract's matrix ``w`` as the matrix over every input the layer reads (a convolution's window of all
        channels): itself, but for a depthwise convolution."""
        return w

    def qat_product(self, klayer, a, kernel):
        """QAT's matrix product of activations ``a`` with the fake-quantized ``kernel``, the bias left out."""
        import tensorflow as tf

        return tf.matmul(a, kernel)

    def columns(self, layer: dict, a: np.ndarray) -> np.ndarray:
        """The rows of the layer's matrix product: its input as it is (dense), its windows (conv)."""
        return a

    def float_accumulate(self, layer: dict, a, contract):
        """The accumulators on real-valued activations ``a`` in TensorFlow: the integer weights at their scale."""
        import tensorflow as tf

        w = contract.weights[layer["name"]] * 2.0 ** -layer["weight"]["frac"]
        b = contract.biases[layer["name"]] * 2.0 ** -layer["accum"]["frac"]
        return self.float_product(layer, a, w) + tf.constant(b, tf.float32)

    def float_product(self, layer: dict, a, w: np.ndarray):
        import tensorflow as tf

        return tf.matmul(a, tf.constant(w, tf.float32))

    def float_apply(self, layer, a, contract):
        """The accumulators, through the output's ReLU (capped for relu6); no rounding or saturation."""
        import tensorflow as tf

        acc, o = self.float_accumulate(layer, a, contract), layer["output"]
        if o.get("relu_max"):
            return tf.clip_by_value(acc, 0.0, o["relu_max"])
        return tf.nn.relu(acc) if o["relu"] else acc

    def accumulate(self, layer: dict, a: np.ndarray, contract) -> np.ndarray:
        w, b = contract.weights[layer["name"]], contract.biases[layer["name"]]
        return matmul(self.columns(layer, a), w, layer["accum"]["bits"]) + b

    def apply(self, layer, a, contract):
        acc = self.accumulate(layer, a, contract)
        out, accum = layer["output"], layer["accum"]
        if (out["bits"], out["frac"], out["relu"]) == (accum["bits"], accum["frac"], False):
            return acc
        return requantize(acc, accum["frac"], out)

    def check(self, layer, bad):
        for k in ("weight", "bias", "accum", "output"):
            if not isinstance(layer.get(k), dict) or not isinstance(layer[k].get("bits"), int) or not isinstance(layer[k].get("frac"), int):
                bad(f"layer {layer.get('name')!r} lacks a valid {k!r} format {{bits, frac}}")
            if not 1 <= layer[k]["bits"] <= 64:
                bad(f"layer {layer.get('name')!r} {k}.bits = {layer[k]['bits']}; allowed: 1..64")
        cap = layer["output"].get("relu_max")
        if cap is not None and not (layer["output"].get("relu") and isinstance(cap, (int, float)) and cap > 0
                                    and float(cap * 2.0 ** layer["output"]["frac"]).is_integer()):
            bad(f"layer {layer.get('name')!r} output.relu_max = {cap!r}; allowed: a positive value on the output's "
                f"grid (2**-{layer['output']['frac']}), with relu set")
        if layer["bias"]["frac"] != layer["accum"]["frac"]:
            bad(f"layer {layer['name']!r}: bias frac {layer['bias']['frac']} differs from accumulator frac {layer['accum']['frac']}")

    def hls_precision(self, layer):
        """Weight, bias, accumulator; the result at full accumulator precision (the ReLU after it, or the next
        layer, rounds and saturates; see ``export/hls.py``)."""
        acc = fmt_type(layer["accum"])
        return {"weight": fmt_type(layer["weight"]), "bias": fmt_type(layer["bias"]), "accum": acc, "result": acc}


@register
class Dense(_Weighted):
    name, keras = "dense", ("Dense",)

    def check(self, layer, bad):
        super().check(layer, bad)
        if "stride" in layer or "padding" in layer:
            bad(f"layer {layer.get('name')!r} (dense) has stride/padding; only conv2d layers take them")


@register
class Conv2D(_Weighted):
    """``kernel`` (``k`` for k x k, or ``[kh, kw]``), ``stride`` (``s`` both ways, or ``[sh, sw]``) and ``padding``
    (1 and ``valid`` when absent; ``same`` pads zeros as Keras does, see
    :func:`~prunehw.core.geometry.conv_geometry`); its matrix's rows ordered (ky, kx, c)."""

    name, keras, windowed = "conv2d", ("Conv2D",), True

    def check(self, layer, bad):
        super().check(layer, bad)
        stride, padding, k = layer.get("stride", 1), layer.get("padding", "valid"), layer.get("kernel")
        if not _size_ok(k):
            bad(f"layer {layer.get('name')!r} kernel = {k!r}; allowed: an integer >= 1, or [kh, kw] with kh != kw")
        if not _size_ok(stride):
            bad(f"layer {layer.get('name')!r} stride = {stride!r}; allowed: an integer >= 1, or [sh, sw] with sh != sw")
        if padding not in PADDINGS:
            bad(f"layer {layer.get('name')!r} padding = {padding!r}; allowed: {', '.join(PADDINGS)}")
        if layer.get("rows") != self.rows(layer):
            bad(f"layer {layer.get('name')!r} has {layer.get('rows')} rows; {self.rows_are(layer)} are {self.rows(layer)}")

    def rows_are(self, layer: dict) -> str:
        return f"its kernel's {kernel_taps(layer)} taps times {layer.get('in_channels')} input channels"

    def rows(self, layer: dict) -> int:
        """The rows its matrix must have: the kernel's taps times the input channels (every channel each tap)."""
        return kernel_taps(layer) * layer.get("in_channels", 0)

    def out_shape(self, layer, in_shapes):
        h, w, _ = in_shapes[0]
        oh, ow, _, _ = conv_geometry(h, w, layer["kernel"], layer.get("stride", 1), layer.get("padding", "valid"))
        return (oh, ow, layer["out_channels"])

    def geometry(self, klayer):
        out = {"kernel": written_size(*klayer.kernel.shape[:2])}
        # written only where they differ from 1 and "valid": a contract without them reads as before
        if tuple(klayer.strides) != (1, 1):
            out["stride"] = written_size(*klayer.strides)
        if klayer.padding != "valid":
            out["padding"] = str(klayer.padding)
        return out

    def qat_product(self, klayer, a, kernel):
        import tensorflow as tf

        return tf.nn.conv2d(a, kernel, list(klayer.strides), klayer.padding.upper())

    def float_product(self, layer, a, w):
        import tensorflow as tf

        (kh, kw), c, (sh, sw) = kernel_size(layer["kernel"]), int(a.shape[-1]), conv_stride(layer)
        if (kh, kw) == (1, 1):
            # a 1x1 convolution (a shortcut's, strided): the positions it reads, times the matrix. (TensorFlow
            # 2.21's oneDNN gradient of a strided 1x1 conv2d on one image corrupts the heap; padding adds nothing
            # here: its windows are whole at every stride)
            return tf.tensordot(a[:, ::sh, ::sw, :], tf.constant(w, tf.float32), 1)
        return tf.nn.conv2d(a, tf.constant(w.reshape(kh, kw, c, -1), tf.float32), [sh, sw],
                            layer.get("padding", "valid").upper())

    def columns(self, layer, a):
        """(N, H, W, C) -> (N, H', W', kh*kw*C), rows ordered (ky, kx, c) like the contract's matrices; ``same``
        padding adds zeros around the map, ``stride`` skips positions."""
        (kh, kw), (sh, sw) = kernel_size(layer["kernel"]), conv_stride(layer)
        n, h, w, c = a.shape
        oh, ow, top, left = conv_geometry(h, w, (kh, kw), (sh, sw), layer.get("padding", "valid"))
        need_h, need_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
        if top or left or need_h > h or need_w > w:
            a = np.pad(a, ((0, 0), (top, max(need_h - h - top, 0)), (left, max(need_w - w - left, 0)), (0, 0)))
        win = sliding_window_view(a, (kh, kw), axis=(1, 2))[:, :need_h - kh + 1:sh, :need_w - kw + 1:sw]
        win = win.transpose(0, 1, 2, 4, 5, 3)                      # N, H', W', ky, kx, C
        return win.reshape(*win.shape[:3], -1)

    def keras_mismatch(self, layer, klayer):
        want = (conv_stride(layer), layer.get("padding", "valid"))
        got = (tuple(klayer.strides), klayer.padding, tuple(getattr(klayer, "dilation_rate", (1, 1))))
        if got != (want[0], want[1], (1, 1)):
            return (f"the Keras model has strides {got[0]}, padding {got[1]!r}, dilation {got[2]}; the contract says "
                    f"stride {layer.get('stride', 1)}, padding {want[1]!r}, no dilation")
        return None


@register
class DepthwiseConv2D(Conv2D):
    """A depthwise convolution (depth multiplier 1): each channel convolved with its own kh x kw kernel. Its
    matrix is (kh*kw) x C, rows ordered (ky, kx), column c the taps of channel c; ``rows`` = kh*kw,
    ``in_channels`` = ``out_channels`` = C; ``kernel``, ``stride`` and ``padding`` as a conv2d's. Accumulator c sums
    channel c's window times column c, plus bias c."""

    name, keras = "depthwise2d", ("DepthwiseConv2D",)

    def rows_are(self, layer):
        return f"its kernel's {kernel_taps(layer)} taps (one column per channel)"

    def rows(self, layer):
        return kernel_taps(layer)

    def check(self, layer, bad):
        super().check(layer, bad)
        if layer.get("in_channels") != layer.get("out_channels"):
            bad(f"layer {layer.get('name')!r} (depthwise) has {layer.get('in_channels')} input and "
                f"{layer.get('out_channels')} output channels; allowed: the same (depth multiplier 1)")

    def matrix(self, kernel):
        kh, kw, c, mult = kernel.shape
        return kernel[..., 0].reshape(kh * kw, c)

    def full_matrix(self, w):
        """The (taps*C x C) matrix of the convolution that computes the same: row (tap, c) holds channel c's weight
        of that tap in column c, zeros elsewhere (block-diagonal, by tap)."""
        taps, c = w.shape
        out = np.zeros((taps * c, c), dtype=w.dtype)
        out[np.arange(taps * c), np.tile(np.arange(c), taps)] = w.reshape(-1)
        return out

    def qat_product(self, klayer, a, kernel):
        import tensorflow as tf

        return tf.nn.depthwise_conv2d(a, kernel, (1, *klayer.strides, 1), klayer.padding.upper())

    def float_product(self, layer, a, w):
        import tensorflow as tf

        (kh, kw), (sh, sw) = kernel_size(layer["kernel"]), conv_stride(layer)
        return tf.nn.depthwise_conv2d(a, tf.constant(w.reshape(kh, kw, -1, 1), tf.float32), (1, sh, sw, 1),
                                      layer.get("padding", "valid").upper())

    def accumulate(self, layer, a, contract):
        w, b = contract.weights[layer["name"]], contract.biases[layer["name"]]
        (kh, kw), c = kernel_size(layer["kernel"]), a.shape[-1]
        win = self.columns(layer, a).reshape(*a.shape[:1], -1, kh * kw, c)       # N, H'W', taps, C
        oh, ow, _ = self.out_shape(layer, [a.shape[1:]])
        return (np.einsum("nptc,tc->npc", win, w).reshape(len(a), oh, ow, c) + b).astype(np.int64)


class _Pool(Kind):
    """``pool``: the window (``p`` for p x p, or ``[ph, pw]``), its strides the window's, no padding (the ragged
    last rows and columns dropped, as Keras' ``valid`` does)."""

    tf_op = ""       # the TensorFlow pooling of the float mirror

    def check(self, layer, bad):
        p = layer.get("pool")
        if not _size_ok(p):
            bad(f"layer {layer.get('name')!r} pool = {p!r}; allowed: an integer >= 1, or [ph, pw] with ph != pw")

    def entry(self, klayer, fmt):
        # (the format passes through: neither the maximum nor the rounded average leaves its inputs' range)
        return {**super().entry(klayer, fmt), "pool": written_size(*klayer.pool_size)}

    def out_shape(self, layer, in_shapes):
        h, w, c = in_shapes[0]
        ph, pw = kernel_size(layer["pool"])
        return (h // ph, w // pw, c)

    def float_apply(self, layer, a, contract):
        import tensorflow as tf

        p = list(kernel_size(layer["pool"]))
        return getattr(tf.nn, self.tf_op)(a, p, p, "VALID")

    def windows(self, layer, a):
        ph, pw = kernel_size(layer["pool"])
        n, h, w_, c = a.shape
        return a[:, : h // ph * ph, : w_ // pw * pw].reshape(n, h // ph, ph, w_ // pw, pw, c)

    def keras_mismatch(self, layer, klayer):
        p = kernel_size(layer["pool"])
        got = (type(klayer).__name__, tuple(getattr(klayer, "pool_size", ())), tuple(getattr(klayer, "strides", ())),
               getattr(klayer, "padding", None))
        if got != (self.keras[0], p, p, "valid"):
            return (f"the Keras model has {got[0]} {got[1]} with strides {got[2]}, padding {got[3]!r}; the contract "
                    f"says {self.keras[0]} {layer['pool']}, strides {layer['pool']}, valid")
        return None


@register
class MaxPool2D(_Pool):
    """The window's maximum."""

    name, keras, tf_op = "maxpool2d", ("MaxPooling2D",), "max_pool2d"

    def apply(self, layer, a, contract):
        return self.windows(layer, a).max(axis=(2, 4))


def average_shift(layer: dict) -> int:
    """E: the fractional bits an average's quotient is taken to before its rounding, ceil(log2(n)) for a window
    of n values (so a power-of-two window's quotient is exact)."""
    ph, pw = kernel_size(layer["pool"])
    return (ph * pw - 1).bit_length()


@register
class AvgPool2D(_Pool):
    """The average of the window's n = ph * pw values, in the input's format: the integer sum S, its quotient
    ``q = trunc(S * 2**E / n)`` toward zero with E = :func:`average_shift` (ceil(log2 n)) more fractional bits,
    then rounded half up to the input's LSB, ``(q + 2**(E-1)) >> E``. A power-of-two window's quotient is exact,
    so its average is the sum shifted right by log2(n), rounded half up (negative ties too: -2.5 -> -2).

    hls4ml's ``avg()`` does exactly this: it sums the window into the layer's ``accum_t`` (the input's format with
    E more integer bits for the sum and E more fractional bits), divides there by the window's size (``ap_fixed``
    division: the integers' quotient, truncated toward zero, at the accumulator's LSB) and casts to the result type,
    the input's format with ``AP_RND`` (round half toward +inf) and ``AP_SAT``. (An average never leaves its
    inputs' range, so the saturation never acts.)"""

    name, keras, tf_op = "avgpool2d", ("AveragePooling2D",), "avg_pool2d"

    def apply(self, layer, a, contract):
        ph, pw = kernel_size(layer["pool"])
        n, shift = ph * pw, average_shift(layer)
        total = self.windows(layer, a).sum(axis=(2, 4)) << shift
        q = np.sign(total) * (np.abs(total) // n)            # (toward zero, as C's integer division)
        return (q + (1 << shift >> 1)) >> shift

    def qat_forward(self, klayer, a, frac):
        import tensorflow as tf

        y = klayer(a)
        ph, pw = (int(v) for v in klayer.pool_size)
        n, shift = ph * pw, (ph * pw - 1).bit_length()
        if n & (n - 1) == 0:      # (the quotient is exact: the real average rounded half up)
            return fake_quant(y, frac, None, None, half_up=True)
        # the window's integer sum back from the real average (in float64: exact for these sizes), then the
        # contract's quotient and rounding; the gradient passes straight through
        s = tf.round(tf.cast(y, tf.float64) * (n * 2.0 ** frac))
        q = tf.sign(s) * tf.floor(tf.abs(s) * 2.0 ** shift / n)
        out = tf.floor((q + 2.0 ** (shift - 1)) / 2.0 ** shift) * 2.0 ** -frac
        return y + tf.stop_gradient(tf.cast(out, y.dtype) - y)

    def hls_precision(self, layer):
        f, shift = layer["input"], average_shift(layer)
        return {"accum": fixed_type(f["bits"] + 2 * shift, f["frac"] + shift, signed=f["signed"]),
                "result": fmt_type(f, rounding=True, saturate=True)}


@register
class Flatten(Kind):
    """Nothing to say: HWC order, as Keras flattens."""

    name, keras = "flatten", ("Flatten",)

    def out_shape(self, layer, in_shapes):
        return (int(np.prod(in_shapes[0])),)

    def apply(self, layer, a, contract):
        return a.reshape(len(a), -1)

    def float_apply(self, layer, a, contract):
        import tensorflow as tf

        return tf.reshape(a, (tf.shape(a)[0], -1))


def add_frac(layer: dict) -> int:
    """F: the fractional bits both inputs of an ``add`` are aligned to before the sum, the finer of the two."""
    return max(f["frac"] for f in layer["input"])


@register
class Add(Kind):
    """The element-wise sum of two inputs of the same shape (a residual connection), in the contract's
    arithmetic: each input shifted left to F = :func:`add_frac` fractional bits (exact), summed exactly, then
    requantized to ``output`` as a weighted layer's accumulator is (its ReLU if ``output.relu``, the ReLU layer
    after the add being fused into it, round half up, saturate to the output's range).

    ``input`` is the list of the two inputs' formats, in the order of ``inputs``. hls4ml's ``nnet::add`` does the
    same: ``res = data1 + data2`` is the exact sum of two ``ap_fixed`` values, cast to the result type; with
    ``AP_RND`` and ``AP_SAT`` that cast rounds half up and saturates. Where a ReLU follows, the add's result keeps
    the exact sum (its widest integer part plus one, at F) and the ReLU's result type rounds and saturates."""

    name, keras = "add", ("Add",)

    def check(self, layer, bad):
        formats, out = layer.get("input"), layer.get("output")
        if not isinstance(formats, list) or len(formats) != 2 or not all(isinstance(f, dict) for f in formats):
            bad(f"layer {layer.get('name')!r} input = {formats!r}; allowed: a list of its two inputs' formats")
        if len(layer.get("inputs", ())) != 2:
            bad(f"layer {layer.get('name')!r} reads {len(layer.get('inputs', ()))} inputs; allowed: 2")
        if not isinstance(out, dict) or not {"bits", "frac", "signed", "relu"} <= set(out):
            bad(f"layer {layer.get('name')!r} has no output format {{bits, frac, signed, relu}}")

    def out_shape(self, layer, in_shapes):
        if len(set(map(tuple, in_shapes))) != 1:
            return ("inputs of different shapes", *map(tuple, in_shapes))
        return tuple(in_shapes[0])

    def evaluate(self, layer, args, contract):
        frac = add_frac(layer)
        total = sum(np.asarray(a, np.int64) << (frac - f["frac"]) for a, f in zip(args, layer["input"]))
        return requantize(total, frac, layer["output"])

    def float_evaluate(self, layer, args, contract):
        import tensorflow as tf

        total, o = args[0] + args[1], layer["output"]
        if o.get("relu_max"):
            return tf.clip_by_value(total, 0.0, o["relu_max"])
        return tf.nn.relu(total) if o["relu"] else total

    def hls_precision(self, layer):
        out = layer["output"]
        if out.get("name"):     # (a ReLU after it: the exact sum here, the rounding and saturation in the ReLU)
            frac = add_frac(layer)
            ints = max(f["bits"] - f["frac"] + (0 if f["signed"] else 1) for f in layer["input"]) + 1
            return {"result": fixed_type(ints + frac, frac, signed=True)}
        return {"result": fmt_type(out, rounding=True, saturate=True)}
