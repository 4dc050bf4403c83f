"""prunehw.model."""
