"""Benchmarks of mnist-diffusion: `python -m benchmarks list | run SUITE[.CASE] | report` (see __main__)."""
