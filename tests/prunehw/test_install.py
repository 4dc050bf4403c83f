"""The design card's folders are importable only through the ``prunehw`` namespace."""

import subprocess
import sys

import pytest


def test_namespace_maps_design_folders(tmp_path):
    code = "import prunehw.core.config, prunehw.model.data, prunehw.export, prunehw.hw, prunehw.sim; print(prunehw.model.data.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("model/data.py")


def test_bare_folder_names_are_not_importable(tmp_path):
    for name in ("core", "model", "export", "hw", "sim"):
        res = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode != 0, f"`import {name}` should fail after installation"
        assert "ModuleNotFoundError" in res.stderr


@pytest.mark.regression
def test_plain_install_reports_an_existing_run(quick_flow, tmp_path):
    """A plain (not editable) install into a fresh virtual environment, then ``prunehw report`` on a run: the
    installed copy must carry everything it reads (the energy table is package data, not a source-tree path).

    The package is built as a wheel (``pip wheel``) and unpacked into the fresh environment, which is what
    ``pip install`` does with it, without letting pip near the test environment (pip asked to install into
    another prefix uninstalls the editable install it finds in its own). The fresh environment sees the test
    environment's third-party packages through a path file, so nothing is downloaded."""
    import sysconfig
    from pathlib import Path

    from cli_helpers import unpack_plain_install

    root = Path(__file__).resolve().parents[2]
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    unpack_plain_install(fresh_site, tmp_path / "wheels")
    (fresh_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")   # (a path line: no editable hook)
    where = subprocess.run([str(py), "-c", "import prunehw.hw, prunehw.hw.models.energy as s; print(prunehw.hw.__file__); "
                            "print(s.DEFAULT_ENERGY_TABLE.is_file())"], capture_output=True, text=True, check=True,
                           cwd=tmp_path)
    hw_file, table_ok = where.stdout.split()
    assert hw_file.startswith(str(venv)) and table_ok == "True", where.stdout
    cfg = tmp_path / "run.toml"
    cfg.write_text((root / "configs" / "quick.toml").read_text().replace('build_dir = "../build"',
                                                                       f'build_dir = "{quick_flow.cfg.build_dir}"'))
    res = subprocess.run([str(py), "-m", "prunehw.cli", "report", "--config", str(cfg)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (quick_flow.run_dir / "report.md").is_file() and "prunehw report" in res.stdout
