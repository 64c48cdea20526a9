"""Runnable benchmarks: `make bench` (python -m benchmarks [NAME ...]).

Each ``bench_*.py`` module has ``main() -> list[Row]``; a row is a measurement, the baseline
measured in the same run, the ratio, and the issue's target. Nothing is asserted: these machines
are noisy, so the numbers are printed for a person to read.
"""
