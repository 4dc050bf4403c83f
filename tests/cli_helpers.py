"""Helpers for tests that run the CLI as a user would."""

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``prunehw`` as a user would, in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "prunehw.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def write_config(path: Path, build_dir: Path, extra: str = "", name: str = "t") -> Path:
    """A small run config: 1k training images, 1 epoch, quick pruning."""
    path.write_text(f"""
[run]
name = "{name}"
seed = 7
build_dir = "{build_dir}"
[data]
train_limit = 1000
test_limit = 200
[train]
epochs = 1
[prune]
steps = 2
finetune_epochs = 1
calibration_images = 64
{extra}
""")
    return path


def need_tool(reason: str | None) -> None:
    """Skip (with ``reason``) when a tool is missing, except in CI (``CI=true``), where that is a failure."""
    import pytest

    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and a required tool is missing: {reason}")
    pytest.skip(reason)


def unpack_plain_install(target, work):
    """The package as ``pip install .`` lays it out, unpacked into ``target`` from a wheel built in ``work``.

    (pip is only asked to build: asked to install into another place, it uninstalls the editable install of
    the environment running the tests.)"""
    import fcntl
    import subprocess
    import sys
    import tempfile
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # (setuptools builds in the source tree's build/: test processes building at once take turns)
    with open(Path(tempfile.gettempdir()) / "prunehw-wheel-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work),
                        str(root)], check=True, capture_output=True)
    (wheel,) = Path(work).glob("prunehw-*.whl")
    zipfile.ZipFile(wheel).extractall(target)
    return Path(target)
