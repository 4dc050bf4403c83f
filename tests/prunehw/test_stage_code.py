"""A stage's cache key covers the code it runs: its own module and every prunehw module that module imports,
the face's included (``prunehw.stages.code_key``). Shown on a copy of the source laid out as pip installs it, so
editing a module there leaves this checkout alone."""

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"prunehw": "prunehw", "core": "prunehw/core", "model": "prunehw/model", "export": "prunehw/export",
           "hw": "prunehw/hw", "sim": "prunehw/sim"}

RUN = """
import pickle, sys
from prunehw.flow import Flow
cfg = pickle.load(open(sys.argv[1], "rb"))
flow = Flow(cfg, log=print)
flow.quantize("dense")
"""


def _copy_source(target: Path) -> Path:
    for folder, dest in FOLDERS.items():
        shutil.copytree(ROOT / folder, target / dest, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _quantize_dense(source: Path, cfg_path: Path) -> str:
    res = subprocess.run([sys.executable, "-c", RUN, str(cfg_path)], capture_output=True, text=True, timeout=600,
                         env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3",
                              "HOME": str(Path.home())}, cwd=source)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


def test_editing_a_face_module_a_stage_runs_reruns_it(quick_flow, tmp_path):
    """The quantize stage of the quick dense network, on the quick flow's own run folder (copied): up to date
    from an unedited copy of the source; after a comment is added to ``prunehw/variants.py`` (the face module
    that quantizes a variant), quantize runs again while train, whose code does not include it, stays up to
    date; editing a face module neither stage runs (``prunehw/claims.py``) changes nothing, nor does editing the
    accelerator's gateware (``prunehw/hw/gateware/pe.py``: both stages reach the hardware only to check that the
    network fits it)."""
    quick_flow.quantize("dense")
    run = tmp_path / "build"
    shutil.copytree(quick_flow.run_dir, run / quick_flow.cfg.name,
                    ignore=shutil.ignore_patterns("hls", "rtl", "sim_*", "mutate"))
    cfg_path = tmp_path / "cfg.pkl"
    cfg_path.write_bytes(pickle.dumps(quick_flow.cfg.replace(build_dir=str(run))))
    source = _copy_source(tmp_path / "src")

    (source / "prunehw" / "claims.py").write_text((source / "prunehw" / "claims.py").read_text() + "\n# edited\n")
    out = _quantize_dense(source, cfg_path)
    assert "train: up to date" in out and "quantize dense: up to date" in out, out

    # the accelerator's code: train and quantize reach it only for the hardware fit check, which writes nothing
    pe = source / "prunehw" / "hw" / "gateware" / "pe.py"
    pe.write_text(pe.read_text() + "\n# edited\n")
    out = _quantize_dense(source, cfg_path)
    assert "train: up to date" in out and "quantize dense: up to date" in out, out

    variants = source / "prunehw" / "variants.py"
    variants.write_text(variants.read_text() + "\n# edited\n")
    out = _quantize_dense(source, cfg_path)
    assert "train: up to date" in out, out
    assert "quantize dense: up to date" not in out and "quantize dense: golden integer model" in out, out


def test_a_stage_code_key_follows_its_imports():
    """The quantize stage's code reaches the face module that quantizes and the export package; the train
    stage's does not reach the sim package; both are stable within a process."""
    from prunehw.core.artifacts import _closure
    from prunehw.stages import HARDWARE, code_key

    quantize = dict(_closure(("prunehw.stages.quantize",)))
    train = dict(_closure(("prunehw.stages.train",)))
    assert {"prunehw.variants", "prunehw.export.quantize", "prunehw.export.golden", "prunehw.stages"} <= set(quantize)
    assert not any(name.startswith("prunehw.sim") for name in train)
    assert any(name.startswith("prunehw.hw.gateware") for name in train)          # (its fit check reaches it)
    kept = dict(_closure(("prunehw.stages.train",), HARDWARE))
    assert "prunehw.stages.train" in kept and not any(name.startswith("prunehw.hw") for name in kept)
    assert code_key("prunehw.stages.quantize") == code_key("prunehw.stages.quantize")
