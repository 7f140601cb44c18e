"""Benchmarks of HandS3C kernels (`python -m benchmarks --help`)."""
