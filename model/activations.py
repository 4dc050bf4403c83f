"""The activations the flow carries, in one place: ReLU, and ReLU capped at 6 (``relu6``, as MobileNets use it).

The config names them ``relu`` and ``relu6``. In the flow's Keras models both are a ``keras.layers.ReLU`` layer
(``max_value`` None or 6); a user's model may also write them as ``Activation("relu")``/``Activation("relu6")``,
as a fused ``activation=`` of a Conv2D or Dense, or as ``ReLU(max_value=6)``. The numeric contract fuses each
into the weighted layer before it (``output.relu``, with ``output.relu_max`` for the cap: see
``export/contract.py``). Other ReLU parameters (another cap, a negative slope, a threshold) are refused.
"""

from __future__ import annotations

__all__ = ["RELU_CAPS", "activation_kind", "relu_cap", "relu_kind", "relu_layer", "relu_refusal"]

#: the ReLU kinds and their caps (the largest output; None: no cap)
RELU_CAPS: dict[str, float | None] = {"relu": None, "relu6": 6.0}


def activation_kind(name: str) -> str | None:
    """The ReLU kind of an activation function's name (``Activation(name)``, ``activation=name``), or None."""
    return name if name in RELU_CAPS else None


def relu_refusal(layer) -> str | None:
    """What of a Keras ``ReLU`` layer the flow cannot carry (a phrase to follow its name), or None if it can."""
    cap = layer.max_value
    if (cap is not None and float(cap) not in {c for c in RELU_CAPS.values() if c}) or float(layer.negative_slope) != 0.0 \
            or float(layer.threshold) != 0.0:
        return (f"has max_value={cap}, negative_slope={float(layer.negative_slope)}, threshold={float(layer.threshold)}; "
                f"supported: ReLU() and ReLU(max_value=6)")
    return None


def relu_kind(layer) -> str | None:
    """``relu`` or ``relu6`` for a Keras ``ReLU`` layer the flow carries (see :func:`relu_refusal`), None for any
    other layer."""
    import keras

    if not isinstance(layer, keras.layers.ReLU):
        return None
    return "relu" if layer.max_value is None else "relu6"


def relu_cap(layer) -> float | None:
    """The cap of a Keras ``ReLU`` layer (6.0 for relu6; None for a plain ReLU)."""
    return RELU_CAPS[relu_kind(layer)]


def relu_layer(kind: str, name: str | None = None, layers=None):
    """The ``ReLU`` layer of ``kind`` (from ``layers``: Keras' own by default, or ``tf_keras.layers`` for the peer
    tool; this module imports no Keras itself, so the peer's process need not load both)."""
    if layers is None:
        import keras

        layers = keras.layers
    return layers.ReLU(max_value=RELU_CAPS[kind], name=name)
