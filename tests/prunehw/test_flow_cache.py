"""Stage caching bugs found on the way (issue 15): each test failed before its fix."""

import numpy as np

from prunehw.core.artifacts import sha256_file


def test_sim_images_follow_the_data_config(quick_flow, tmp_path):
    """A stored image set with enough images but from another data config is replaced, not reused."""
    from prunehw.flow import Flow

    flow = Flow(quick_flow.cfg.replace(build_dir=str(tmp_path)), log=lambda *a: None)
    flow.__dict__["data"] = quick_flow.data
    stale = flow.run_dir / "sim_images.npz"
    stale.parent.mkdir(parents=True, exist_ok=True)
    np.savez(stale, x=np.zeros((len(quick_flow.data.x_test) + 10, *quick_flow.data.x_test.shape[1:]), np.uint8))
    before = sha256_file(stale)
    path = flow.sim_images()
    np.testing.assert_array_equal(np.load(path)["x"], quick_flow.data.x_test)
    assert sha256_file(path) != before
    again = sha256_file(flow.sim_images())
    assert again == sha256_file(path)  # unchanged data: the same file is kept


def test_quantize_cache_ignores_how_the_hls_check_runs(quick_flow):
    """Changing the hls4ml check's worker count or image count does not redo the quantization."""
    from prunehw.flow import Flow

    quick_flow.quantize("dense")
    lines = []
    q = quick_flow.cfg.quant.replace(workers=quick_flow.cfg.quant.workers + 1,
                                     hls_images=quick_flow.cfg.quant.hls_images + 7)
    flow = Flow(quick_flow.cfg.replace(quant=q), log=lines.append)
    flow.__dict__["data"] = quick_flow.data
    flow.quantize("dense")
    assert any(line.startswith("quantize dense: up to date") for line in lines), lines


def test_replaced_entries_leave_nothing_stale(tmp_path):
    """A re-measured synthesis without a timing problem must not keep the old run's problem line."""
    from prunehw.core.artifacts import read_json, update_variant

    update_variant(tmp_path, "dense", {"synth": {"fmax_mhz": 99.2, "problem": "fails timing"}, "accuracy": {"float": 0.9}})
    update_variant(tmp_path, "dense", {"synth": {"fmax_mhz": 101.6}, "accuracy": {"quant": 0.8}}, replace=("synth",))
    v = read_json(tmp_path / "summary.json")["variants"]["dense"]
    assert v["synth"] == {"fmax_mhz": 101.6}
    assert v["accuracy"] == {"float": 0.9, "quant": 0.8}   # everything else still merges
