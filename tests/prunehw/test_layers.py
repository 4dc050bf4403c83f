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


def test_a_face_module_on_no_floor_is_caught(installed, tmp_path):
    """The face's floor is exhaustive: a new ``prunehw/x.py`` the contract does not place breaks it (rather than
    going unchecked)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(installed, copy)
    (copy / "prunehw" / "sweeps2.py").write_text("from prunehw.flow import Flow  # noqa: F401\n")
    res = _lint(copy)
    assert res.returncode != 0 and "2 kept, 1 broken" in res.stdout and "prunehw.sweeps2" in res.stdout, \
        res.stdout[-3000:]


#: the source folders and the packages they are installed as
FOLDERS = {"prunehw": "prunehw", "core": "prunehw.core", "model": "prunehw.model", "export": "prunehw.export", "hw": "prunehw.hw",
           "sim": "prunehw.sim"}


def _module(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(root: Path) -> list[str]:
    """``file:line: from <module> import <_name>`` for every private name (one underscore) a module imports from a
    module of another package: what a package keeps private is not part of what it offers the others."""
    import ast

    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            me = _module(path, root)
            package = me if path.name == "__init__.py" else me.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prunehw.")):
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") \
                            and node.module.rpartition(".")[0] != package:
                        found.append(f"{path.relative_to(root)}:{node.lineno}: from {node.module} import {alias.name}")
    return found


def test_no_private_name_is_imported_from_another_package(tmp_path):
    assert private_imports(ROOT) == []
    # the check can fail: a sim module reaching into export's private helpers
    for folder in FOLDERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "sim" / "x.py").write_text("from prunehw.export.golden import _im2col, golden\n"
                                           "from prunehw.sim.runner import _runner\n")
    assert private_imports(tmp_path) == ["sim/x.py:1: from prunehw.export.golden import _im2col"]
