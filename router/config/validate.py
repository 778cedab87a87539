"""`routerctl validate`: a config file's errors, then its warnings.

Errors are what `router` itself refuses (router/config/reader.py); warnings are
names that the route's protocol reads, but probably not as meant
(router/config/checks.py). Both read the file with the same bounds as the router.
"""

from __future__ import annotations

from router.config import yamlload
from router.config.checks import warnings
from router.config.reader import load_file
from router.core.confkit import ConfigError


def check_file(path: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a config file."""
    try:
        config = load_file(path)
    except ConfigError as exc:
        return exc.errors, []
    with open(path, "rb") as f:
        raw = yamlload.load(f.read(), path)  # it parsed just above, within the bounds
    return [], warnings(config, raw if isinstance(raw, dict) else {})
