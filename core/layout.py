"""Where a run's files live: one :class:`RunLayout` names every path of a run folder, so that the stages that
write a file and the reports that read it agree on one spelling.

::

    <build_dir>/<run>/
        manifest.json        stage keys and output hashes; the run's tool versions and data set
        summary.json         every measured figure (its lock: summary.json.lock)
        sim_images.npz       the test images the RTL simulations read
        report.md            the savings report, beside its CSVs and PNGs
        sim_bench/           the simulation benchmark
        synth/               the synthesis table of all variants (CSV, PNG)
        mutate/<variant>/    the fault campaign of a variant
        <variant>/
            model.keras          its float model (dense: trained or imported; others: pruned)
            index_maps.json      the rows and columns matrix pruning kept (a chain)
            channel_groups.json  the channel groups matrix pruning removed together, and the rows it kept (a graph)
            contract.json        its numeric contract, with weights.npz
            hls/                 the hls4ml project
            rtl/                 the accelerator's Verilog, accelerator.json, the primitives' models
            sim_<simulator>/     cocotb runs (result.json)
            synth/               synthesis and place-and-route
            board/               the board top: its simulations and bitstream
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLayout"]


@dataclass(frozen=True)
class RunLayout:
    """The paths of the run folder ``root``."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def sim_images(self) -> Path:
        return self.root / "sim_images.npz"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def sim_bench(self) -> Path:
        return self.root / "sim_bench"

    def mutate(self, variant: str | None = None) -> Path:
        """The fault campaigns' folder, or one variant's."""
        return self.root / "mutate" / variant if variant else self.root / "mutate"

    def variant(self, variant: str) -> Path:
        return self.root / variant

    def model(self, variant: str) -> Path:
        return self.root / variant / "model.keras"

    def index_maps(self, variant: str) -> Path:
        return self.root / variant / "index_maps.json"

    def channel_groups(self, variant: str) -> Path:
        return self.root / variant / "channel_groups.json"

    def contract(self, variant: str) -> Path:
        return self.root / variant / "contract.json"

    def hls(self, variant: str) -> Path:
        return self.root / variant / "hls"

    def rtl(self, variant: str) -> Path:
        return self.root / variant / "rtl"

    def accelerator(self, variant: str) -> Path:
        """The generated design's description (its program, counters, analytic cycles and activity)."""
        return self.rtl(variant) / "accelerator.json"

    def sim(self, variant: str, simulator: str) -> Path:
        return self.root / variant / f"sim_{simulator}"

    def synth(self, variant: str | None = None) -> Path:
        """A variant's synthesis and place-and-route, or (no variant) the run's table of them all."""
        return self.root / variant / "synth" if variant else self.root / "synth"

    def board(self, variant: str) -> Path:
        return self.root / variant / "board"
