"""Ratio benchmarks: each measures an optimised path and its naive baseline in
the same run, on the same machine, and reports the speed-up ratio (so numbers
from different machines compare). `make bench` runs them all."""
