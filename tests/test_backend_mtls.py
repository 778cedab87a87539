"""mTLS toward backends: tls {ca, cert, key} per backend; a wrong CA is a 502 naming TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import pytest

from router.config.reader import parse
from router.config.spec import BackendTLSSpec
from router.core.confkit import ConfigError
from tests.support.dataplane import backend, get, make_runtime, request, running_plane
from tests.support.rawbackend import RawBackend


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)  # fmt: skip


def _signed(d: Path, ca: str, name: str, cn: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a backend certificate and a router client certificate it signed; another CA."""
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other")
    _signed(d, "ca", "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1")
    _signed(d, "ca", "client", "router", "extendedKeyUsage=clientAuth")
    return d


async def mtls_backend(pki: Path) -> RawBackend:
    """A backend that wants a client certificate signed by the CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    b = RawBackend()
    b._server = await asyncio.start_server(b._accept, "127.0.0.1", 0, ssl=ctx)
    b.port = b._server.sockets[0].getsockname()[1]
    return b


def tls(pki: Path, ca: str = "ca") -> BackendTLSSpec:
    return BackendTLSSpec(str(pki / f"{ca}.pem"), str(pki / "client.pem"), str(pki / "client.key"))


async def test_the_router_presents_its_client_certificate(pki: Path) -> None:
    """tls {ca, cert, key}: the backend that requires a client certificate answers."""
    b = await mtls_backend(pki)
    try:
        spec = backend("m", b.port, scheme="https", tls=tls(pki))
        async with running_plane(make_runtime([spec])) as p:
            resp = await request(p.port, get("/secure"))
    finally:
        await b.close()
    assert resp.status == 200
    assert b.requests[0].target == "/secure"


async def test_a_wrong_ca_is_a_502_that_names_tls(pki: Path) -> None:
    """A backend certificate that does not chain to tls.ca: 502, and the answer says TLS."""
    b = await mtls_backend(pki)
    try:
        spec = backend("m", b.port, scheme="https", tls=tls(pki, "other"))
        async with running_plane(make_runtime([spec])) as p:
            resp = await request(p.port, get())
    finally:
        await b.close()
    assert resp.status == 502
    assert json.loads(resp.body)["error"] == "backend TLS handshake failed"
    assert b.requests == []


async def test_no_client_certificate_is_refused_by_the_backend(pki: Path) -> None:
    """Without cert and key the backend refuses the connection: a 502, nothing served."""
    b = await mtls_backend(pki)
    try:
        only_ca = BackendTLSSpec(str(pki / "ca.pem"))
        spec = backend("m", b.port, scheme="https", tls=only_ca)
        async with running_plane(make_runtime([spec])) as p:
            resp = await request(p.port, get())
    finally:
        await b.close()
    assert resp.status == 502
    assert b.requests == []


def test_files_that_are_not_certificates_are_refused_at_their_path(pki: Path) -> None:
    """A key that is not the certificate's, or a CA file that is not one, names its path."""
    text = (
        "backends:\n  m:\n    url: https://127.0.0.1:1\n"
        f"    tls: {{ca: {pki / 'ca.key'}, cert: {pki / 'client.pem'},\n"
        f"          key: {pki / 'server.key'}}}\n"
        "routes: [{name: r, match: {path_prefix: /}, strategy: {split: {weights: {m: 100}}}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert any(
        e.startswith("backends.m.tls.ca: not a CA certificate file") for e in info.value.errors
    )
    fixed = text.replace(str(pki / "ca.key"), str(pki / "ca.pem"))
    with pytest.raises(ConfigError) as info:
        parse(fixed)
    assert any(
        e.startswith("backends.m.tls.cert: certificate and key do not load")
        for e in info.value.errors
    )
