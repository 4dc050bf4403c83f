"""The design card's folders are importable only through the ``prunehw`` namespace."""

import subprocess
import sys


def test_namespace_maps_design_folders(tmp_path):
    code = "import prunehw.model.data, prunehw.export, prunehw.hw, prunehw.sim; print(prunehw.model.data.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("model/data.py")


def test_bare_folder_names_are_not_importable(tmp_path):
    for name in ("model", "export", "hw", "sim"):
        res = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
        assert res.returncode != 0, f"`import {name}` should fail after installation"
        assert "ModuleNotFoundError" in res.stderr
