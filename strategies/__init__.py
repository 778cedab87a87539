"""Routing strategies: pure decisions, no I/O. See strategies/base.py."""
