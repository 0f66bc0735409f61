"""Side-by-side benchmarks of perceiver_cli against transformers' Perceiver IO (run: python -m benchmarks)."""
