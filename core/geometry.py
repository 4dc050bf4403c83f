"""Shape arithmetic shared by every layer of the flow (the model builds its networks with it, the numeric
contract's readers pad and stride with it): one definition of how Keras sizes a convolution's output."""

from __future__ import annotations

__all__ = ["conv_geometry", "conv_stride", "kernel_size", "written_size"]


def kernel_size(k) -> tuple[int, int]:
    """(height, width) of a kernel, a pooling window or a convolution's strides given as one integer (the same
    both ways) or as [height, width]."""
    return (int(k), int(k)) if isinstance(k, (int, float)) else (int(k[0]), int(k[1]))


def conv_stride(layer: dict) -> tuple[int, int]:
    """(vertical, horizontal) stride of a contract entry: its ``stride`` (``s`` or ``[sh, sw]``), 1 where it has
    none (a dense layer, or a convolution that does not stride)."""
    return kernel_size(layer.get("stride", 1))


def written_size(height: int, width: int):
    """A kernel or pooling window as the config and the contract write it: ``k`` where it is square, else
    ``[height, width]`` (the inverse of :func:`kernel_size`)."""
    return int(height) if height == width else [int(height), int(width)]


def conv_geometry(h: int, w: int, k, stride=1, padding: str = "valid") -> tuple[int, int, int, int]:
    """(out_h, out_w, pad_top, pad_left) of a convolution of an h x w map, as Keras computes them; ``k``: the
    kernel, k x k or [kh, kw]; ``stride``: s or [sh, sw] (:func:`kernel_size`), each axis with its own below.

    ``valid``: no padding, ``(h - k) // stride + 1`` outputs. ``same``: ``ceil(h / stride)`` outputs and
    ``max((out - 1) * stride + k - h, 0)`` zero rows in all, the smaller half on top (the larger at the bottom),
    likewise for columns. Zeros padded in the integer domain are zeros in the real one (every activation
    format's zero is integer 0), so golden model, hls4ml and hardware pad alike.
    """
    (kh, kw), (sh, sw) = kernel_size(k), kernel_size(stride)
    if padding == "valid":
        return (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
    if padding != "same":
        raise ValueError(f"padding {padding!r} is unknown; allowed: valid, same")
    oh, ow = -(-h // sh), -(-w // sw)
    return oh, ow, max((oh - 1) * sh + kh - h, 0) // 2, max((ow - 1) * sw + kw - w, 0) // 2
