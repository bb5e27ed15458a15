"""Benchmarks of loadshape (``make bench`` = ``python -m bench.run``); not part of the test run."""
