"""The layers of DESIGN §2 as a contract a tool enforces: import-linter's ``lint-imports`` on the package as
pip installs it (the editable install maps model/, export/, hw/, sim/ into ``prunehw`` through an import
hook that import-linter's graph builder cannot follow, so the check runs on a plain installed copy)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    from cli_helpers import unpack_plain_install

    target = unpack_plain_install(tmp_path_factory.mktemp("installed"), tmp_path_factory.mktemp("wheel"))
    assert (target / "prunehw" / "hw" / "gateware" / "accelerator.py").is_file()
    return target


def _lint(target: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=target, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(target)})


def test_layers_are_kept(installed):
    res = _lint(installed)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "3 kept, 0 broken" in res.stdout


def test_a_layer_violation_is_caught(installed, tmp_path):
    """The check can fail: the model importing hw breaks the layers, hw importing the model the second contract,
    the gateware importing a target (not through the platform) the third."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(installed, copy)
    for path, line in ((copy / "prunehw" / "hw" / "compile" / "program.py", "from prunehw.model import data"),
                       (copy / "prunehw" / "model" / "train.py", "from prunehw.hw.compile import program"),
                       (copy / "prunehw" / "hw" / "gateware" / "pe.py", "from prunehw.hw.target import ecp5")):
        path.write_text(path.read_text() + f"\n{line}  # noqa: E402,F401\n")
    res = _lint(copy)
    assert res.returncode != 0 and "0 kept, 3 broken" in res.stdout, res.stdout[-3000:]
