"""The ``export`` stage: the variant's hls4ml project, converted from its contract and compiled, its C
simulation checked against the golden integer model, image by image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunehw.core.artifacts import record_stage, sha256_file, stage_key, update_variant
from prunehw.stages import code_key, up_to_date

__all__ = ["export"]


def export(flow, variant: str, force: bool = False) -> Path:
    """hls4ml project from the contract, compiled; its C simulation checked against the golden model."""
    from prunehw.core.artifacts import write_json
    from prunehw.export.contract import load_contract
    from prunehw.export.golden import golden
    from prunehw.export.hls import convert, hls_config, predict_ints
    from prunehw.export.quantize import dequantized_model
    from prunehw.model.network import load_model

    contract_path = flow.quantize(variant)
    out = flow.layout.hls(variant)
    q = flow.cfg.quant
    key = stage_key(flow.cfg.key("data", "quant"), sha256_file(contract_path),
                    sha256_file(contract_path.with_name("weights.npz")), code_key(__name__))
    stage = f"export:{variant}"
    if up_to_date(flow, stage, key, out, force):
        return out
    contract = load_contract(contract_path)
    model = dequantized_model(load_model(flow.float_model(variant)), contract)
    hmodel = convert(model, contract, out, q.hls_backend)
    write_json(out / "prunehw_hls_config.json", hls_config(model, contract, q.hls_backend))
    data = flow.data
    n = q.hls_images or len(data.x_test)
    x, y = data.x_test[:n], data.y_test[:n]
    got = predict_ints(hmodel, out, contract, x, workers=q.workers)
    want = golden(contract, x)
    equal = np.all(got == want, axis=1)
    match = int(equal.sum())
    acc = float(np.mean(got.argmax(axis=1) == y))
    entry = {"bitexact": {"hls": {"match": match, "total": int(n)}},
             "accuracy": {"hls": acc, "images": {"hls": int(n)}}}
    if match < n:
        i = int(np.flatnonzero(~equal)[0])
        entry["bitexact"]["hls"]["first_mismatch"] = {"image": i, "hls": got[i].tolist(), "golden": want[i].tolist()}
    update_variant(flow.run_dir, variant, entry)
    record_stage(flow.run_dir, stage, key, [out / "prunehw_hls_config.json"])
    flow.log(f"export {variant}: hls4ml C-sim equals the golden model on {match}/{n} images (logit integers), "
             f"accuracy {acc:.4f}; project in {out}")
    if match < n:
        flow.log(f"export {variant}: first mismatch at test image {entry['bitexact']['hls']['first_mismatch']['image']}")
    return out
