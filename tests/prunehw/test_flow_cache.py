"""Stage caching bugs found on the way: each test failed before its fix."""

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


def _write_figures(run_dir, worker, n):
    from prunehw.core.artifacts import update_summary, update_variant

    for i in range(n):
        update_variant(run_dir, f"v{worker}", {"cycles": {f"figure{i}": i}})
        update_summary(run_dir, {"explore": {f"w{worker}_{i}": i}})


def test_summary_writers_in_parallel_processes_lose_nothing(tmp_path):
    """summary.json is read, merged and written back under a lock: four processes writing at once keep every
    figure (without the lock, one writer's read-modify-write overwrites another's)."""
    import multiprocessing as mp

    from prunehw.core.artifacts import read_json

    procs = [mp.get_context("spawn").Process(target=_write_figures, args=(tmp_path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    summary = read_json(tmp_path / "summary.json")
    assert all(summary["variants"][f"v{w}"] == {"cycles": {f"figure{i}": i for i in range(40)}} for w in range(4))
    assert len(summary["explore"]) == 4 * 40


def test_one_cache_for_stages_values_and_records(tmp_path):
    """``core.artifacts.Cache``, which the flow's stages, the sweep's values and the experiments' points share:
    a hit needs the same key and every output file unchanged; a kept value comes back equal."""
    from prunehw.core.artifacts import Cache, record_stage, stage_is_current, write_bytes

    out = write_bytes(tmp_path / "a" / "out.bin", b"first")
    record_stage(tmp_path, "train", "k1", [out])
    assert stage_is_current(tmp_path, "train", "k1") and not stage_is_current(tmp_path, "train", "k2")
    write_bytes(out, b"changed by hand")
    assert not stage_is_current(tmp_path, "train", "k1")        # an output changed since: a miss
    record_stage(tmp_path, "train", "k1", [out])
    out.unlink()
    assert not stage_is_current(tmp_path, "train", "k1")        # ... or removed

    values = Cache(tmp_path / "cache", index="index.json", table="values")
    assert values.load("prune:x", "fp") is None
    values.keep("prune:x", "fp", {"weights": [1, 2, 3]})
    assert values.load("prune:x", "fp") == {"weights": [1, 2, 3]} and values.load("prune:x", "other") is None
    kept = next((tmp_path / "cache" / "values").glob("*.pkl"))
    write_bytes(kept, b"not a pickle any more")
    assert values.load("prune:x", "fp") is None                 # a damaged value is recomputed, not unpickled

    points = Cache(tmp_path, index="points.json", table="points")
    points.record("p1", "budget1", [], record={"accuracy": 0.98})
    assert points.current("p1", "budget1")["record"] == {"accuracy": 0.98}
    assert points.current("p1", "budget2") is None
    points.forget()
    assert points.current("p1", "budget1") is None
    assert stage_is_current(tmp_path, "train", "k1") is False and "stages" in __import__("json").loads(
        (tmp_path / "manifest.json").read_text())               # other indexes untouched


def test_the_run_layout_names_the_files_the_stages_write(quick_flow):
    """Every file the stages wrote for the quick run is where ``RunLayout`` says, for every variant."""
    layout = quick_flow.layout
    assert layout.root == quick_flow.run_dir
    assert layout.summary.is_file() and layout.manifest.is_file()
    manifest = __import__("json").loads(layout.manifest.read_text())["stages"]
    for v in quick_flow.variant_names():
        assert quick_flow.float_model(v) == layout.model(v) and layout.model(v).is_file()
        assert quick_flow.quantize(v) == layout.contract(v)
        assert quick_flow.rtl(v) == layout.rtl(v) and layout.accelerator(v).is_file()
        recorded = {str(p) for p in manifest[f"rtl:{v}"]["outputs"]}
        assert str(layout.accelerator(v).relative_to(layout.root)) in recorded


def test_summary_names_are_declared(tmp_path):
    """A figure under a name ``core.results`` does not declare is refused in one line, and nothing is written."""
    import pytest

    from prunehw.core.artifacts import update_summary, update_variant
    from prunehw.core.errors import PrunehwError

    with pytest.raises(PrunehwError, match=r"variants.dense: 'fmax' is not a declared summary.json name; allowed: "):
        update_variant(tmp_path, "dense", {"fmax": 101.6})
    with pytest.raises(PrunehwError, match=r"summary.json: 'trian' is not a declared"):
        update_summary(tmp_path, {"trian": {"seconds": 1}})
    assert not (tmp_path / "summary.json").exists()
    update_variant(tmp_path, "dense", {"synth": {"fmax_mhz": 101.6}})
    assert (tmp_path / "summary.json").is_file()


def test_a_new_verilog_drops_the_figures_measured_on_the_old_one(quick_flow):
    """Synthesis, the device table and the board are measured on a variant's Verilog: regenerating the same
    Verilog keeps them in summary.json; a different one drops them (until they are measured again)."""
    from prunehw.core.artifacts import read_json, update_variant
    from prunehw.stages.rtl import rtl

    v, layout = "matrix-0.80", quick_flow.layout
    update_variant(layout.root, v, {"synth": {"fmax_mhz": 101.0}, "smallest_device": "LFE5U-25F"})
    rtl(quick_flow, v, force=True)
    assert read_json(layout.summary)["variants"][v]["synth"] == {"fmax_mhz": 101.0}
    top = layout.rtl(v) / "prunehw_top.v"
    top.write_text(top.read_text() + "// an older generator's Verilog\n")
    rtl(quick_flow, v, force=True)
    entry = read_json(layout.summary)["variants"][v]
    assert "synth" not in entry and "smallest_device" not in entry and entry["array"]["rows"] > 0
