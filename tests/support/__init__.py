"""Test helpers: scriptable raw backends, an in-process data plane, raw clients."""
