"""Shared state: rollouts, history, counters, samples, leases. See base.py."""
