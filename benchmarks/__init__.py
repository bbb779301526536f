"""Side-by-side performance comparisons (`make bench`); never run by the test suite."""
