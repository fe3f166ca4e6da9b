"""The two training stages and the machinery they share (run folder, checkpoints, progress)."""
