"""prunehw.hw."""
