"""prunehw: prune a small CNN so its matrices stay dense, quantize it, and verify it on hardware."""

__all__ = ["__version__"]
__version__ = "0.1.0"
