"""The pod's life in config.yaml: the `shutdown:` and `probes:` sections, `state.url_file`.

    shutdown: {delay: 5s}                          # SIGTERM -> keep serving this long, then drain
    probes: {listen: 0.0.0.0:9902, metrics: true}  # /healthz /readyz (/metrics) for the node
    state: {url_file: /etc/router/secrets/redis-url}  # the url from a mounted Secret

Read by router/config/reader.py like every other section (errors name their path and
value); kept here so that the lifecycle's settings sit in one small module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from router.config.spec import AdminSpec, ListenSpec, ProbesSpec, ShutdownSpec, StateSpec
from router.core.confkit import ConfigError, Node

# config.py's `_address`: (node, path, value, default host) -> (host, port) or None
Address = Callable[[Node, str, object, str], "tuple[str, int] | None"]

MAX_DELAY = 600.0  # longer than any endpoint propagation; a typo like 5h would hang a rollout


def read_shutdown(root: Node) -> ShutdownSpec:
    node = root.mapping("shutdown")
    delay = node.duration("delay", ShutdownSpec().delay, positive=False)
    if delay > MAX_DELAY:
        node.error(node.sub("delay"), "must be at most 10m", node.raw("delay"))
        delay = ShutdownSpec().delay
    node.done()
    return ShutdownSpec(delay)


def read_probes(
    root: Node, address: Address, listen: ListenSpec, admin: AdminSpec
) -> ProbesSpec | None:
    """None when the section is absent: no probes listener."""
    if not root.has("probes"):
        return None
    node = root.mapping("probes")
    default = ProbesSpec()
    value = node.raw("listen")
    addr = None if value is None else address(node, node.sub("listen"), value, default.host)
    host, port = addr or (default.host, default.port)
    for name, other in (("listen", (listen.host, listen.port)), ("admin.listen", _admin(admin))):
        if port and port == other[1] and (host == other[0] or "0.0.0.0" in (host, other[0])):
            node.error(node.sub("listen"), f"same port as {name}", value)
    metrics = node.boolean("metrics", default.metrics)
    node.done()
    return ProbesSpec(host, port, metrics)


def _admin(admin: AdminSpec) -> tuple[str, int]:
    return admin.host, admin.port


def state_url(spec: StateSpec, schemes: tuple[str, ...]) -> str | None:
    """`state.url`, or the content of `state.url_file` (a Kubernetes Secret mounted as
    a file keeps a password out of the ConfigMap). Read when the router starts, not
    when a config is validated: CI has no such file. Raises ConfigError."""
    if spec.url_file is None:
        return spec.url
    try:
        url = Path(spec.url_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(
            [f"state.url_file: cannot read {spec.url_file}: {exc.strerror}"]
        ) from None
    if urlsplit(url).scheme not in schemes:
        raise ConfigError(
            [f"state.url_file: {spec.url_file} must hold a URL with scheme {', '.join(schemes)}"]
        )
    return url
