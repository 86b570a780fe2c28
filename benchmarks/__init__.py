"""Benchmarks of the images and of local mode (`pytest --benchmark-only`); see README.md."""
