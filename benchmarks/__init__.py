"""Side-by-side benchmarks: `python -m benchmarks` (see benchmarks/__main__.py). Never part of the tests."""
