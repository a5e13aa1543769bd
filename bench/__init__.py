"""Benchmark harness for SteadyDancer: `python -m bench.run --help` (FLOP model: `steadydancer.flops`); the one-command
GPU measurement for a lent H200 is `bench/device_check.sh` (its phases: `bench.device_phases`)."""
