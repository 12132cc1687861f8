"""Benchmarks of the advbook library (run as scripts, not part of the tests)."""
