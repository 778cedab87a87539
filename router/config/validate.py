"""`routerctl validate`: a config file's errors, then its warnings.

Errors are what `router` itself refuses (router/config/reader.py); warnings are
names that the route's protocol reads, but probably not as meant
(router/config/checks.py). Both read the file with the same bounds as the router.
"""

from __future__ import annotations

from router.config import yamlload
from router.config.checks import warnings
from router.config.reader import from_document
from router.core.confkit import ConfigError


def check_file(path: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a config file, read and parsed once."""
    try:
        data = read_file(path)
        raw = yamlload.load(data, path)
    except OSError as exc:
        return [f"{path}: cannot read: {exc.strerror or exc}"], []
    except yamlload.YAMLRefused as exc:
        return [str(exc)], []
    try:
        config = from_document(raw, data, source=path)
    except ConfigError as exc:
        return exc.errors, []
    return [], warnings(config, raw if isinstance(raw, dict) else {})


def read_file(path: str) -> bytes:
    """A config file's bytes, refused past the YAML size bound without reading them all."""
    with open(path, "rb") as f:
        return f.read(yamlload.MAX_BYTES + 1)
