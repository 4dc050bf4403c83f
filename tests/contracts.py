"""Hand-made numeric contracts for the hardware tests: convolutions of any kernel, stride and padding (as
``export.contract.conv_geometry`` sizes them), with random integer weights, without training a model."""

from prunehw.export.contract import Contract, chain_layers, conv_geometry


def _fmt(frac: int) -> dict:
    return {"bits": 8, "frac": frac, "signed": False}


def conv_contract(rng, h: int, w: int, c: int, convs, pool: int | None = None, units: int = 4,
                  pools: tuple = ()) -> Contract:
    """``convs``: (kernel, stride, padding, filters) per convolution, each with a fused ReLU; ``pool``: a max
    pooling after the first, ``pools``: ("maxpool2d" | "avgpool2d", window) poolings after the first instead;
    then flatten and a dense layer of ``units`` logits."""
    pools = tuple(pools) or ((("maxpool2d", pool),) if pool else ())
    layers, weights, biases = [], {}, {}
    shape, fmt = (h, w, c), _fmt(8)
    for i, (k, s, padding, n) in enumerate(convs):
        name = f"conv{i}"
        layer = {"name": name, "type": "conv2d", "kernel": k, "rows": k * k * shape[2], "out_channels": n,
                 "in_channels": shape[2], "input": fmt, "weight": {"bits": 8, "frac": 6}, "bias": {"bits": 8, "frac": 14},
                 "accum": {"bits": 26, "frac": 14 if i == 0 else 16},
                 "output": {"bits": 8, "frac": 10, "signed": False, "relu": True, "name": name + "_relu"}}
        if s != 1:
            layer["stride"] = s
        if padding != "valid":
            layer["padding"] = padding
        layers.append(layer)
        weights[name], biases[name] = rng.integers(-128, 128, (k * k * shape[2], n)), rng.integers(-9, 9, n)
        oh, ow, _, _ = conv_geometry(shape[0], shape[1], k, s, padding)
        shape, fmt = (oh, ow, n), _fmt(10)
        for j, (kind, p) in enumerate(pools if i == 0 else ()):
            layers.append({"name": f"pool{j}", "type": kind, "pool": p, "input": fmt})
            shape = (shape[0] // p, shape[1] // p, n)
    flat = shape[0] * shape[1] * shape[2]
    layers.append({"name": "flatten", "type": "flatten", "input": fmt})
    layers.append({"name": "fc", "type": "dense", "rows": flat, "out_channels": units, "in_channels": flat, "input": fmt,
                   "weight": {"bits": 8, "frac": 6}, "bias": {"bits": 8, "frac": 10}, "accum": {"bits": 30, "frac": 16},
                   "output": {"bits": 30, "frac": 16, "signed": True, "relu": False, "name": None}})
    weights["fc"], biases["fc"] = rng.integers(-128, 128, (flat, units)), rng.integers(-9, 9, units)
    return Contract({"version": 2, "input": {"shape": [h, w, c], **_fmt(8)}, "layers": chain_layers((h, w, c), layers)},
                    weights, biases)


def export_to_hls4ml(model, calib_x, folder):
    """``model`` quantized on ``calib_x`` to a contract in ``folder``, read back, and through hls4ml: (contract,
    the dequantized Keras model, the compiled hls4ml model, its project folder)."""
    from prunehw.export.contract import load_contract, save_contract
    from prunehw.export.hls import convert
    from prunehw.export.quantize import dequantized_model, quantize

    spec, w, b = quantize(model, calib_x)
    save_contract(folder / "contract.json", spec, w, b)
    contract = load_contract(folder / "contract.json")
    deq = dequantized_model(model, contract)
    return contract, deq, convert(deq, contract, folder / "hls"), folder / "hls"
