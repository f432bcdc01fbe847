"""Benchmarks of the pipeline's steps: `python benchmarks/run.py --help`."""
