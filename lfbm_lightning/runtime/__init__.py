"""What a run keeps and shares: checkpoints, atomic file writes, the run directory
and the distributed plumbing."""
