"""Payload capture: records of exchanges, redacted, to rotated files or CloudEvents."""
