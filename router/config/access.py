"""Who may reach what: the admin API's tokens by role, and backends' TLS (mTLS).

    admin:
      tokens:
        - {label: ci, role: operator, env: ROUTER_CI_TOKEN}
        - {label: dashboards, role: viewer, file: /etc/router/viewer-token}
    backends:
      iris-v2:
        url: https://iris-v2.internal:8443
        tls: {ca: /etc/router/ca.pem, cert: /etc/router/client.pem, key: /etc/router/client.key}

Read by router/config/reader.py; the tokens themselves are read when the router
starts (router/ops/auth.py), the certificates when a backend's pool is made
(router/dataplane/upstream.py `client_ssl_context`).
"""

from __future__ import annotations

import ssl

from router.config.spec import BackendTLSSpec, TokenSpec
from router.core.confkit import Node

_ROLES = ("viewer", "operator")


def read_tokens(admin: Node) -> tuple[TokenSpec, ...]:
    """`tokens: [{label, role, file | env}]`: each read when the router starts."""
    out: list[TokenSpec] = []
    labels: dict[str, str] = {}
    for path, item in admin.items("tokens"):
        node = Node(item, path, admin.errors)
        label = node.string("label", required=True)
        role = node.choice("role", "", _ROLES)
        if node.ok and not node.has("role"):
            node.error(node.sub("role"), f"is required: one of {', '.join(_ROLES)}")
        file, env = node.readable_file("file"), node.opt_string("env")
        if node.ok and (file is None) == (env is None):
            node.error(path, "must set exactly one of file, env")
        if label and (first := labels.setdefault(label, path)) != path:
            node.error(node.sub("label"), f"duplicate label, first used at {first}", label)
        node.done()
        if label and role:
            out.append(TokenSpec(label, role, file, env))
    return tuple(out)


def read_backend_tls(backend: Node, scheme: str) -> BackendTLSSpec | None:
    """`tls: {ca, cert, key}`: the CA to trust and the client certificate (mTLS)."""
    if backend.raw("tls") is None:
        return None
    node = backend.mapping("tls")
    mark = len(node.errors)
    ca, cert, key = node.readable_file("ca"), node.readable_file("cert"), node.readable_file("key")
    if node.ok and (cert is None) != (key is None):
        missing = "key" if key is None else "cert"
        node.error(node.sub(missing), "is required with " + ("cert" if key is None else "key"))
    if node.ok and scheme and scheme != "https":
        node.error(node.path, "only applies to an https url", scheme)
    if ca and backend.data.get("ca_file"):
        node.error(node.sub("ca"), "set tls.ca or ca_file, not both", ca)
    if node.ok and len(node.errors) == mark:
        _loadable(node, ca, cert, key)
    node.done()
    return BackendTLSSpec(ca, cert, key)


def _loadable(node: Node, ca: str | None, cert: str | None, key: str | None) -> None:
    """The files must be what they say: a CA bundle, a certificate and its key."""
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        node.error(node.sub("ca"), f"not a CA certificate file: {exc}", ca)
        return
    if cert and key:
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            node.error(node.sub("cert"), f"certificate and key do not load: {exc}", cert)
