"""level3_training."""
