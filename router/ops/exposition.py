"""The /metrics page as families: merged across workers, rendered as text or OpenMetrics.

Theory of operation
-------------------
Every part renders its figures as Prometheus text lines (`metric_lines`,
router/dataplane/metrics.py), so nothing else needs a metrics library. This module
reads such text back into `Family` values (name, type, help, samples in order),
which is what three things need:

- *Workers.* With `router --workers N` only worker 0 is scraped. Each worker
  leaves the text of its own per-process figures beside its request counts
  (router/ops/workers.py); worker 0 adds them up with `merge`: counters and
  histograms are summed over every worker, dead ones included (a counter never
  goes backwards), gauges named in `SUMMED_GAUGES` over the live workers; any
  other gauge describes the shared state (a rollout's phase, a drift score) and
  is worker 0's own.
- *OpenMetrics.* A scraper whose `Accept` asks for
  `application/openmetrics-text` gets `render_openmetrics`: counter families
  named without `_total`, gauges named `*_info` as `info`, `# EOF` at the end.
  The text format is the default (`render_text`).
- *Checks.* Tests read families to assert one name per family and that the
  README lists every family (`documented_families`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

TEXT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# Gauges of one process that add up to the router's: summed over the live workers.
SUMMED_GAUGES: Final = frozenset(
    {
        "router_requests_in_flight",
        "router_mirror_queue_depth",
        "router_mirror_queued_bytes",
        "router_metrics_pending_windows",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
    }
)
_SUFFIXES: Final = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


@dataclass(slots=True)
class Family:
    """One metric family: its samples as `name{labels}` -> value (as written), in order."""

    name: str
    kind: str = "untyped"
    help: str = ""
    samples: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> dict[str, Family]:
    """Families of Prometheus text in their order. A sample line names its family by
    the last TYPE line (histograms' `_bucket`, `_sum`, `_count` included)."""
    families: dict[str, Family] = {}
    current: Family | None = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            current = _comment(line, families) or current
            continue
        key, _, value = line.rpartition(" ")
        name = key.partition("{")[0]
        if current is None or not _belongs(name, current):
            current = families.setdefault(name, Family(name))
        current.samples[key] = value
    return families


def _comment(line: str, families: dict[str, Family]) -> Family | None:
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
        return None
    fam = families.setdefault(parts[2], Family(parts[2]))
    rest = parts[3] if len(parts) > 3 else ""
    if parts[1] == "TYPE":
        fam.kind = rest.strip() or "untyped"
    else:
        fam.help = rest
    return fam


def _belongs(name: str, fam: Family) -> bool:
    if name == fam.name:
        return True
    return any(name == fam.name + s for s in _SUFFIXES.get(fam.kind, ()))


def _value(text: str) -> float:
    if text in ("+Inf", "Inf"):
        return float("inf")
    if text == "-Inf":
        return float("-inf")
    return float(text)


def merge(
    own: Mapping[str, Family], peers: Sequence[tuple[bool, Mapping[str, Family]]]
) -> dict[str, Family]:
    """`own` plus every peer's (live?, families), by the rules in the module doc."""
    out = {name: Family(f.name, f.kind, f.help, dict(f.samples)) for name, f in own.items()}
    for live, families in peers:
        for name, fam in families.items():
            if not _summed(fam, live):
                continue
            into = out.get(name)
            if into is None:
                into = out[name] = Family(fam.name, fam.kind, fam.help)
            for key, value in fam.samples.items():
                was = into.samples.get(key)
                into.samples[key] = value if was is None else _number(_value(was) + _value(value))
    return out


def _summed(fam: Family, live: bool) -> bool:
    if fam.kind in ("counter", "histogram", "summary"):
        return True
    return live and fam.kind == "gauge" and fam.name in SUMMED_GAUGES


def render_text(families: Iterable[Family]) -> str:
    """Prometheus text format 0.0.4."""
    lines: list[str] = []
    for fam in families:
        if fam.help:
            lines.append(f"# HELP {fam.name} {fam.help}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        lines += [f"{key} {v}" for key, v in fam.samples.items()]
    return "\n".join(lines) + "\n" if lines else ""


def to_openmetrics(text: str) -> str:
    """The same page in OpenMetrics 1.0: only the HELP and TYPE lines change (a
    counter family is named without `_total`, a gauge named `*_info` is an `info`,
    `untyped` is `unknown`), blank lines go, `# EOF` ends it.

    The page is cut at its comment lines (a few per family) and only those are
    rewritten; the sample lines between them are copied as they are, so a page of
    100,000 samples converts at the speed of `str.split` and `str.join`."""
    parts = ("\n" + text.replace("\n\n", "\n")).split("\n# ")
    heads = [p.partition("\n") for p in parts[1:]]
    kinds = {}
    for head, _, _ in heads:
        word, _, rest = head.partition(" ")
        if word == "TYPE":
            name, _, kind = rest.partition(" ")
            kinds[name] = kind.strip()
    out = [parts[0].strip("\n")] if parts[0].strip("\n") else []
    for head, _, samples in heads:
        word, _, rest = head.partition(" ")
        name, _, tail = rest.partition(" ")
        new, kind = _om_name(name, kinds.get(name, "untyped"))
        out.append(f"# {word} {new} {kind if word == 'TYPE' else tail.replace(chr(34), BQ)}")
        if samples:  # copied once, by the join below
            out.append(samples)
    if out and out[-1].endswith("\n"):
        out[-1] = out[-1].rstrip("\n")
    out.append("# EOF\n")
    return "\n".join(out)


BQ = '\\"'  # a double quote escaped, as OpenMetrics wants it in HELP


def _om_name(name: str, kind: str) -> tuple[str, str]:
    if kind == "counter" and name.endswith("_total"):
        return name[: -len("_total")], "counter"
    if kind == "gauge" and name.endswith("_info"):
        return name[: -len("_info")], "info"
    return name, "unknown" if kind == "untyped" else kind


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def wants_openmetrics(accept: str) -> bool:
    """True when `accept` (an Accept header) prefers OpenMetrics to the text format."""
    best: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        best[media] = max(best.get(media, 0.0), q)
    om = best.get("application/openmetrics-text", 0.0)
    text = max(best.get("text/plain", 0.0), best.get("text/*", 0.0))
    return om > 0 and om >= text


def negotiate(text: str, accept: str) -> tuple[bytes, str]:
    """The page's body and Content-Type for a scraper's Accept header."""
    if wants_openmetrics(accept):
        return to_openmetrics(text).encode(), OPENMETRICS_TYPE
    return text.encode(), TEXT_TYPE
