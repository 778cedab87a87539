"""The shadow strategy: config validation with exact paths, and who gets mirrored."""

from __future__ import annotations

import random

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from router.config.reader import parse as parse_config
from router.core.confkit import ConfigError, Node
from router.core.rollout import Rollout
from router.dataplane.hashing import key_of
from strategies.registry import REGISTRY
from strategies.shadow import SHADOW, Shadow, ShadowSpec, mirror_bucket

KNOWN = frozenset({"model-v1", "model-v2", "model-v3", "model-v1b"})
PATH = "routes[0].strategy.shadow"

FULL = """
primary: model-v1
shadows: [model-v2]
percent: 100
methods: [POST]
max_body: 1MiB
secondary: {backend: model-v1b, percent: 10}
compare:
  - {field: $.label, kind: label}
  - {field: $.probabilities, kind: probs}
  - {field: $.score, kind: number, abs: 0.01, rel: 0.0}
  - {field: $.embedding, kind: vector, metric: cosine, min_similarity: 0.99}
float_tolerance: 1e-6
sample_disagreements: {enabled: true, max: 100, ttl: 1h, fields_only: false,
                       store_request_body: false}
"""


def read(block: object) -> tuple[ShadowSpec, list[str]]:
    errors: list[str] = []
    node = Node(block, PATH, errors)
    spec = SHADOW.parse(node, KNOWN)
    assert isinstance(spec, ShadowSpec)
    return spec, errors


def built(**fields: object) -> Shadow:
    spec, errors = read({"primary": "model-v1", "shadows": ["model-v2"], **fields})
    assert errors == []
    return SHADOW.build(spec)  # type: ignore[return-value]


def test_full_example_parses() -> None:
    """The documented example block reads into the spec it describes."""
    spec, errors = read(yaml.safe_load(FULL))
    assert errors == []
    assert (spec.primary, spec.shadows, spec.percent_bp) == ("model-v1", ("model-v2",), 10_000)
    assert spec.methods == frozenset({"POST"})
    assert spec.max_body == 1024 * 1024
    assert (spec.secondary, spec.secondary_bp) == ("model-v1b", 1000)
    assert [f.kind for f in spec.compare] == ["label", "probs", "number", "vector"]
    assert spec.compare[2].abs_tol == 0.01
    assert spec.compare[3].metric == "cosine"
    assert spec.float_tolerance == 1e-6
    assert spec.samples.ttl == 3600.0
    assert spec.backends() == ("model-v1", "model-v2", "model-v1b")


def test_defaults() -> None:
    """Unset keys mirror everything, every method, 1 MiB bodies, no secondary."""
    strategy = built()
    assert strategy.copies.methods is None
    assert strategy.copies.max_body == 1024 * 1024
    assert strategy.secondary is None
    assert strategy.spec.compare == ()
    assert strategy.spec.samples.enabled
    assert strategy.override_header is None


BASE = {"primary": "model-v1", "shadows": ["model-v2"]}
NOT_BACKEND = "is not a backend defined under backends"


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"primary": None}, "primary: is required"),
        ({"primary": "nope"}, f"primary: {NOT_BACKEND}, got 'nope'"),
        ({"shadows": None}, "shadows: is required"),
        ({"shadows": []}, "shadows: must name at least one backend"),
        ({"shadows": "model-v2"}, "shadows: must be a list, got 'model-v2'"),
        ({"shadows": ["model-v2", "x"]}, f"shadows[1]: {NOT_BACKEND}, got 'x'"),
        ({"shadows": ["model-v1"]}, "shadows[0]: is already the primary or listed before, got "
         "'model-v1'"),
        ({"percent": 140}, "percent: must be 0..100, got 140"),
        ({"percent": 1.234}, "percent: must have at most two decimals (0.01 % steps), got 1.234"),
        ({"methods": ["GET", "P OST"]}, "methods[1]: must be an HTTP method like POST, got "
         "'P OST'"),
        ({"max_body": "lots"}, "max_body: must be a size like 512, 64KiB or 10MiB, got 'lots'"),
        ({"secondary": {"backend": "model-v2"}}, "secondary.backend: must differ from the primary "
         "and the shadows, got 'model-v2'"),
        ({"secondary": {"percent": 5}}, "secondary.backend: is required"),
        ({"compare": [{"field": "x", "kind": "label"}]}, "compare[0].field: bad JSONPath: must "
         "start with '$', got 'x'"),
        ({"float_tolerance": "big"}, "float_tolerance: must be a number in 0..1, got 'big'"),
        ({"sample_disagreements": {"max": 0}}, "sample_disagreements.max: must be an integer in "
         "1..100000, got 0"),
        ({"percnt": 5}, "percnt: unknown key"),
    ],
)  # fmt: skip
def test_errors_name_their_exact_path(extra: dict[str, object], error: str) -> None:
    """Each mistake is reported once, at the path of the key that holds it."""
    _, errors = read({**BASE, **extra})
    assert errors == [f"{PATH}.{error}"]


def test_whole_config_reports_the_route_path() -> None:
    """Through the config loader, a shadow error carries the full path from the root."""
    text = """
backends:
  model-v1: {url: http://127.0.0.1:9001}
  model-v2: {url: http://127.0.0.1:9002}
routes:
  - name: scores
    match: {path_prefix: /score}
    strategy:
      shadow: {primary: model-v1, shadows: [model-v2], percent: 140}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.errors == ["routes[0].strategy.shadow.percent: must be 0..100, got 140"]
    config = parse_config(text.replace("140", "50"))
    assert config.routes[0].strategy_kind == "shadow"
    assert REGISTRY["shadow"] is SHADOW


# -- decisions ---------------------------------------------------------------------


def mirrored_share(strategy: Shadow, keys: list[int], backend: str) -> float:
    hits = sum(backend in strategy.decide(k, None, None).mirrors for k in keys)
    return hits / len(keys)


KEYS = [key_of(f"user-{i}".encode()) for i in range(20_000)]


def test_primary_always_answers() -> None:
    """Every decision names the primary with reason 'shadow'; weights give it 100 %."""
    strategy = built(percent=50)
    for key in KEYS[:500]:
        decision = strategy.decide(key, None, None)
        assert decision.primary == "model-v1"
        assert decision.reason == "shadow"
    assert strategy.weights(None) == {"model-v1": 100.0}


def test_percent_extremes() -> None:
    """100 % mirrors every request to every shadow; 0 % mirrors none."""
    everything = built(percent=100, shadows=["model-v2", "model-v3"])
    nothing = built(percent=0)
    for key in KEYS[:500]:
        assert everything.decide(key, None, None).mirrors == ("model-v2", "model-v3")
        assert nothing.decide(key, None, None).mirrors == ()


def test_percent_is_the_share_mirrored() -> None:
    """About `percent` of users are mirrored (20 000 sequential ids, ±1 point)."""
    assert mirrored_share(built(percent=25), KEYS, "model-v2") == pytest.approx(0.25, abs=0.01)
    assert mirrored_share(built(percent=2.5), KEYS, "model-v2") == pytest.approx(0.025, abs=0.005)


def test_mirror_sample_is_independent_of_the_split_bucket() -> None:
    """Users in a 10 % canary bucket are mirrored at the same rate as everyone else."""
    strategy = built(percent=30)
    canary = [k for k in KEYS if k % 10_000 < 1000]
    rest = [k for k in KEYS if k % 10_000 >= 1000]
    assert mirrored_share(strategy, canary, "model-v2") == pytest.approx(0.30, abs=0.04)
    assert mirrored_share(strategy, rest, "model-v2") == pytest.approx(0.30, abs=0.015)


def test_sticky_key_gives_the_same_answer_every_time() -> None:
    """The same key is always (or never) mirrored, in any instance of the strategy."""
    first, second = built(percent=40), built(percent=40)
    for key in KEYS[:1000]:
        assert first.decide(key, None, None) == second.decide(key, None, None)
        assert first.decide(key, None, None) is first.decide(key, None, None)


def test_secondary_is_sampled_on_its_own() -> None:
    """The noise-floor copy gets its own share, independent of the shadow's sample."""
    strategy = built(percent=50, secondary={"backend": "model-v1b", "percent": 20})
    decisions = [strategy.decide(k, None, None) for k in KEYS]
    both = sum(d.mirrors == ("model-v2", "model-v1b") for d in decisions) / len(KEYS)
    second = sum("model-v1b" in d.mirrors for d in decisions) / len(KEYS)
    assert second == pytest.approx(0.20, abs=0.01)
    assert both == pytest.approx(0.10, abs=0.01)
    assert strategy.secondary == "model-v1b"
    default_share = built(percent=30, secondary={"backend": "model-v1b"})
    assert default_share.spec.secondary_bp == 3000


def test_random_keys_sample_randomly() -> None:
    """Without a sticky identity (random keys) the share still holds."""
    rng = random.Random(5)
    keys = [rng.getrandbits(64) for _ in range(20_000)]
    assert mirrored_share(built(percent=10), keys, "model-v2") == pytest.approx(0.10, abs=0.01)


def test_paused_rollout_stops_mirroring() -> None:
    """`routerctl pause` on a shadow route (phase paused) stops mirrors, not answers."""
    strategy = built(percent=100)
    paused = Rollout("scores", kind="shadow", phase="paused")
    assert strategy.decide(KEYS[0], paused, None).mirrors == ()
    assert strategy.decide(KEYS[0], paused.evolve(phase="running"), None).mirrors == ("model-v2",)


def test_methods_and_body_limit_are_exposed_as_bytes() -> None:
    """The proxy reads the copied methods as bytes (as parsed) and max_body in bytes."""
    strategy = built(methods=["post", "PUT"], max_body="64KiB")
    assert strategy.copies.methods == frozenset({b"POST", b"PUT"})
    assert strategy.copies.max_body == 64 * 1024


@given(st.integers(0, 2**64 - 1), st.integers(0, 10_000), st.integers(0, 10_000))
def test_raising_percent_only_adds_mirrored_users(key: int, low: int, high: int) -> None:
    """A user mirrored at a lower share stays mirrored at any higher share."""
    low, high = min(low, high), max(low, high)
    if mirror_bucket(key) < low:
        assert mirror_bucket(key) < high
    assert 0 <= mirror_bucket(key) < 10_000
