"""The ``mlops-levels`` command: runs, simulates and compares the levels."""
