"""prunehw.sim."""
