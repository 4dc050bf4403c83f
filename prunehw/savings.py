"""Storage of a variant, derived from its files and its accelerator description.

Storage: the Keras file, a TensorFlow SavedModel (the seed report's measure),
the Keras file gzip'd, a CSR encoding of the kernels (float32 values, int32
column indices and row pointers: the index overhead counted), the kernels and
biases as float32 (``weights_float32``), the weight ROMs at their layers' widths
(``packed_weights``), and the packed image the RTL loads (weight tiles, biases
and row tables, as stored in its ROMs: ``packed``).

Energy per inference is the hardware's model, priced from the RTL's counters: ``prunehw.hw.models.energy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["csr_bytes", "storage"]



def csr_bytes(kernels: list[np.ndarray], value_bytes: int = 4, index_bytes: int = 4) -> int:
    """Bytes of the kernels (as im2col matrices, rows x cols) in CSR: values, column indices, row pointers."""
    total = 0
    for k in kernels:
        mat = k.reshape(-1, k.shape[-1])
        nnz = int(np.count_nonzero(mat))
        total += nnz * (value_bytes + index_bytes) + (mat.shape[0] + 1) * index_bytes
    return total


def storage(model_path: Path, desc: dict | None) -> dict[str, int]:
    """Storage figures of one variant (bytes); ``packed`` only when its accelerator was generated."""
    from prunehw.model.inference import saved_sizes
    from prunehw.model.network import load_model, prunable_layers

    model = load_model(model_path)
    out = saved_sizes(model)
    kernels = [l.kernel.numpy() for l in prunable_layers(model)]
    out["csr"] = csr_bytes(kernels)
    # the kernels and biases as float32 (the dense model's: what "x times smaller" is counted against)
    out["weights_float32"] = 4 * sum(int(np.prod(l.kernel.shape)) + int(np.prod(l.bias.shape))
                                     for l in prunable_layers(model))
    if desc:
        mem = desc["memories"]
        # the weight ROMs alone (tiles at their layer's width, zero-padded to whole tiles), and with the biases
        # and row tables the accelerator also stores
        out["packed_weights"] = (mem["weights"]["bits"] + 7) // 8
        bits = mem["weights"]["bits"] + sum(mem[k]["words"] * mem[k]["bits_per_word"] for k in ("bias", "row_table"))
        out["packed"] = (bits + 7) // 8
    return out
