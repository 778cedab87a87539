"""Shadow figures as the admin API shows them: read the store, summarize, add noise.

Theory of operation. Every replica's mirror workers add their integer counters
to the same hashes (router/shadow/mirror.py), so one `read_counters` call gives the
sum over replicas: `cmp:<backend>` per mirrored backend (compare.py's layout)
and `mirror` with the route's mirror events (`offered`, `oversize_body`,
`oversize_answer`, `sent|<b>`, `dropped|<b>`, `errors|<b>`, `rewrite_failed|<b>`:
a copy its arm's `rewrite` could not apply to, router/core/rewrite.py; names
escaped with figures.escape). Rates, their bounds and
latency quantiles come from `compare_figures.summarize`; with a `secondary` (a second
copy of the primary's version) each shadow also gets `compare.noise_report`:
disagreement beyond the primary's own nondeterminism, and which fields are
too noisy to judge.

A canary route also counts each comparison under its rollout window,
`cmp:<backend>:<window>` (`window_counter`), so the agreement gate judges each
step (and shadow first) on its own comparisons; `read_agreement` turns that
hash into the gates' input: {field: (agree, n)}, "$" for whole answers.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from router.shadow.figures import (
    NoiseReport,
    Summary,
    counter_name,
    escape,
    noise_report,
    summarize,
)
from router.state.base import StateStore
from strategies.shadow import ShadowSpec

EVENTS: Final = "mirror"  # the route's event counter hash
DIFFS: Final = "diffs"  # the route's list of sampled disagreements
WHOLE_ANSWER: Final = "$"  # the agreement "field" of whole answers


def window_counter(backend: str, window: str, settings: str = "") -> str:
    """The comparison counter hash of one mirrored backend during one rollout window."""
    return f"{counter_name(backend, settings)}:{window}"


def agreement_counts(
    counters: Mapping[str, int], fields: Sequence[str]
) -> dict[str, tuple[int, int, int]]:
    """(agreeing items, compared items, requests) per field from one comparison hash
    (compare_figures.py's layout); "$" is whole items (every field agrees on it)."""
    out: dict[str, tuple[int, int, int]] = {}
    for name in fields:
        if name == WHOLE_ANSWER:
            get = counters.get
            out[name] = (get("items_agree", 0), get("items", 0), get("n", 0))
            continue
        f = f"f|{escape(name)}|"
        out[name] = (
            counters.get(f + "agree", 0),
            counters.get(f + "n", 0),
            counters.get(f + "rq", 0),
        )
    return out


async def read_agreement(
    store: StateStore,
    route: str,
    backend: str,
    window: str,
    fields: Sequence[str],
    settings: str = "",
) -> dict[str, tuple[int, int, int]]:
    """The agreement counts of `backend` in one window, summed over replicas."""
    name = window_counter(backend, window, settings)
    counters = await store.read_counters(route, [name])
    return agreement_counts(counters.get(name, {}), fields)


def mirrored_backends(settings: ShadowSpec, backends: tuple[str, ...]) -> tuple[str, ...]:
    """The shadows of a shadow route; any backend of another strategy's route."""
    return settings.shadows if settings.primary else backends


def lane_events(events: Mapping[str, int], backend: str) -> dict[str, int]:
    key = escape(backend)
    words = ("sent", "dropped", "errors", "down", "rewrite_failed")
    return {word: events.get(f"{word}|{key}", 0) for word in words}


def noise_dict(report: NoiseReport) -> dict[str, Any]:
    fields = {
        name: {
            "disagreement": f.disagreement.to_dict(),
            "noise": f.noise.to_dict(),
            "excess": f.excess,
            "noisy": f.noisy,
        }
        for name, f in report.fields.items()
    }
    return {"noisy": report.noisy, "fields": fields}


def _pair(summary: Summary, events: Mapping[str, int], backend: str) -> dict[str, Any]:
    entry = summary.to_dict()
    entry["mirror"] = lane_events(events, backend)
    return entry


async def read_summary(
    store: StateStore,
    route: str,
    settings: ShadowSpec,
    backends: tuple[str, ...],
    compare_id: str = "",
) -> dict[str, Any]:
    """The route's figures summed over replicas, under the route's way of comparing
    (`compare_id`); one store round trip."""
    shadows = mirrored_backends(settings, backends)
    secondary = settings.secondary
    everyone = (*shadows, *((secondary,) if secondary else ()))
    names = [counter_name(b, compare_id) for b in everyone]
    counters = await store.read_counters(route, [*names, EVENTS])
    events = counters.get(EVENTS, {})
    second = summarize(counters[counter_name(secondary, compare_id)]) if secondary else None
    pairs: dict[str, Any] = {}
    for backend in shadows:
        raw = counters.get(counter_name(backend, compare_id), {})
        if not raw and not settings.primary:
            continue  # another strategy's backend that was never mirrored
        summary = summarize(raw)
        pairs[backend] = _pair(summary, events, backend)
        if second is not None:
            pairs[backend]["noise"] = noise_dict(noise_report(summary, second))
    dropped = sum(v for k, v in events.items() if k.startswith("dropped|"))
    return {
        "route": route,
        "primary": settings.primary or None,
        "shadows": pairs,
        "secondary": _pair(second, events, secondary) if second and secondary else None,
        "offered": events.get("offered", 0),
        "dropped": dropped,
        "oversize_body": events.get("oversize_body", 0),
        "oversize_answer": events.get("oversize_answer", 0),
        "not_inference": events.get("not_inference", 0),
    }


def agreement_pairs(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """Each compared backend's agreement with the primary, from `read_summary`'s body
    (the automation ladder's figure); None before any comparison."""
    pairs = {
        backend: {
            "n": pair["n"],
            "items": pair["items"],
            "agreement": pair["agreement"],
            "fields": {name: f["agreement"] for name, f in pair["fields"].items()},
        }
        for backend, pair in summary["shadows"].items()
        if pair["n"]
    }
    return pairs or None


async def read_diffs(store: StateStore, route: str, n: int) -> list[dict[str, Any]]:
    """The newest `n` sampled disagreements of the route, newest first."""
    out = []
    for item in await store.samples(route, DIFFS, n):
        with contextlib.suppress(ValueError):
            record = json.loads(item)
            if isinstance(record, dict):
                out.append(record)
    return out
