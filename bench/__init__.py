"""Benchmarks (``make bench``): figures measured on a cluster of the benchmark's own."""
