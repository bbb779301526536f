"""level2_devops."""
