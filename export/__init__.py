"""prunehw.export."""
