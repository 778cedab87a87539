"""deploy/kubernetes renders, passes the Kubernetes schema strictly, and keeps our
policy (tests/support/manifests.py); and both checks fail on a broken manifest."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest

from router.config.reader import validate_file
from tests.support.manifests import (
    KUBERNETES,
    KUSTOMIZE,
    Obj,
    find,
    policy_problems,
    render,
    schema_problems,
)

KUSTOMIZATIONS = ["base", "overlays/demo", "overlays/production"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(name) for name in KUSTOMIZATIONS}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_is_valid_for_kubernetes_strictly(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    """kubernetes-validate --strict, against the oldest version we claim."""
    objects = rendered[name]
    assert find(objects, "Deployment", "deploy-router")
    assert schema_problems(objects) == [], f"Kubernetes {KUBERNETES}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_policy_point_holds(rendered: dict[str, list[Obj]], name: str) -> None:
    assert policy_problems(rendered[name]) == []


def test_the_overlays_bring_redis_and_monitoring(rendered: dict[str, list[Obj]]) -> None:
    """Redis with its AOF on a claim in both overlays; the PodMonitor and the alerting
    rules in production."""
    for name in ("overlays/demo", "overlays/production"):
        assert find(rendered[name], "StatefulSet", "deploy-router-redis")
    assert find(rendered["overlays/production"], "PodMonitor", "deploy-router")
    assert find(rendered["overlays/production"], "PrometheusRule", "deploy-router")
    (secret,) = find(rendered["overlays/demo"], "Secret", "deploy-router")
    assert {"admin-token", "redis-url"} <= secret["data"].keys()


def test_the_configmap_config_passes_routerctl_validate() -> None:
    """What the README tells operators to run in CI before applying an edit."""
    assert validate_file(str(KUSTOMIZE / "base" / "config.yaml")) == []


def router_container(objects: list[Obj]) -> Obj:
    (dep,) = find(objects, "Deployment", "deploy-router")
    container: Obj = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def misspell_probe_field(objects: list[Obj]) -> None:
    probe = router_container(objects)["readinessProbe"]
    probe["httpGet"]["pth"] = probe["httpGet"].pop("path")


def misspell_probe_name(objects: list[Obj]) -> None:
    c = router_container(objects)
    c["readinesProbe"] = c.pop("readinessProbe")


def misspell_probe_setting(objects: list[Obj]) -> None:
    probe = router_container(objects)["livenessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")


def drop_run_as_non_root(objects: list[Obj]) -> None:
    (dep,) = find(objects, "Deployment", "deploy-router")
    del dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    del router_container(objects)["securityContext"]["runAsNonRoot"]


def short_grace(objects: list[Obj]) -> None:
    (dep,) = find(objects, "Deployment", "deploy-router")
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10


def subpath_config(objects: list[Obj]) -> None:
    mount = router_container(objects)["volumeMounts"][0]
    mount["mountPath"], mount["subPath"] = "/etc/router/config.yaml", "config.yaml"


def probes_on_loopback(objects: list[Obj]) -> None:
    (cm,) = find(objects, "ConfigMap", "deploy-router-config")
    text = cm["data"]["config.yaml"]
    cm["data"]["config.yaml"] = text.replace("listen: 0.0.0.0:9902", "listen: 127.0.0.1:9902")


def admin_exposed(objects: list[Obj]) -> None:
    (svc,) = find(objects, "Service", "deploy-router-admin")
    svc["spec"]["type"] = "LoadBalancer"


BREAKAGES: dict[str, tuple[Callable[[list[Obj]], None], bool, bool]] = {
    # what is broken: (how, the schema sees it, the policy sees it)
    "a misspelled probe field": (misspell_probe_field, True, True),
    "a misspelled probe": (misspell_probe_name, True, True),
    "a misspelled probe setting": (misspell_probe_setting, True, False),
    "a missing runAsNonRoot": (drop_run_as_non_root, False, True),
    "a grace period shorter than delay + drain": (short_grace, False, True),
    "the config mounted by subPath": (subpath_config, False, True),
    "probes on loopback": (probes_on_loopback, False, True),
    "the admin API on a LoadBalancer": (admin_exposed, False, True),
}


@pytest.mark.parametrize("broken", BREAKAGES)
def test_a_broken_manifest_fails(rendered: dict[str, list[Obj]], broken: str) -> None:
    """Each check can fail: a copy broken one way is caught where it should be."""
    how, by_schema, by_policy = BREAKAGES[broken]
    objects = copy.deepcopy(rendered["overlays/production"])
    how(objects)
    assert bool(schema_problems(objects)) == by_schema
    assert bool(policy_problems(objects)) == by_policy
    assert schema_problems(objects) or policy_problems(objects)


def test_kustomize_sources_are_all_used() -> None:
    """Every YAML file under deploy/kubernetes is a kustomization or listed by one."""
    listed: set[Path] = set()
    for kustomization in KUSTOMIZE.rglob("kustomization.yaml"):
        text = kustomization.read_text()
        for path in kustomization.parent.glob("*.yaml"):
            if path.name == "kustomization.yaml" or f"- {path.name}" in text:
                listed.add(path)
    assert set(KUSTOMIZE.rglob("*.yaml")) == listed
