"""Example model servers and the demo launcher (not part of the installed router)."""
