"""Benchmark harness: the router against direct-to-backend and nginx, in one run."""
