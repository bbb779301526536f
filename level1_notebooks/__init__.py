"""level1_notebooks."""
