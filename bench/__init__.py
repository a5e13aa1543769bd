"""Benchmark harness for SteadyDancer: `python -m bench.run --help`; FLOP model in `bench.flops`."""
