"""How routerctl prints what the admin API returns: tables, figures, bars.

Pure functions from the API's JSON to lines of text, kept apart from
router/ops/cli.py, which parses arguments and talks to the API. The canary's view
(ramp, gates, why) is in router/ops/cli_rollout.py.
"""

from __future__ import annotations

import time
from typing import Any

from router.core.concept import REFERENCE


def when(ts: Any) -> str:
    """An epoch time (s or ms) as UTC text with its age; other values as given."""
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        return str(ts) if ts else "-"
    seconds = ts / 1000 if ts > 1e12 else float(ts)
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))
    return f"{stamp} ({_age(time.time() - seconds)} ago)"


def _age(delta: float) -> str:
    delta = max(delta, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit}"
    return f"{int(delta)}s"


def _shares(weights: dict[str, Any]) -> str:
    return ", ".join(f"{name} {float(share):g}%" for name, share in weights.items()) or "-"


def _rollout(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    parts = [str(r.get("phase") or "-")]
    if r.get("kind") == "canary" or r.get("candidate"):
        parts.append(f"step {int(r.get('step', 0)) + 1}")
        parts.append(f"weight {int(r.get('weight_bp', 0)) / 100:g}%")
    for key in ("active", "level"):
        if r.get(key):
            parts.append(f"{key} {r[key]}")
    parts.append(f"rev {r.get('revision', 1)}")
    if r.get("reason"):
        parts.append(f"({r['reason']})")
    return "  ".join(parts)


def table(rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell; the last column is left as it is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def route_lines(routes: list[dict[str, Any]]) -> list[str]:
    rows = [["ROUTE", "STRATEGY", "BACKENDS", "ROLLOUT"]]
    for r in routes:
        strategy = str(r.get("strategy", ""))
        if r.get("protocol") not in (None, "json"):
            strategy += f" ({r['protocol']})"
        rows.append(
            [r["name"], strategy, _shares(r.get("weights", {})), _rollout(r.get("rollout"))]
        )
    problems = [f"{r['name']}: {p['why']}" for r in routes for p in r.get("compare_problems") or []]
    return table(rows) + (["", "COMPARISON PROBLEMS", *problems] if problems else [])


def status_lines(status: dict[str, Any]) -> list[str]:
    cfg, store = status.get("config", {}), status.get("store", {})
    loaded = when(cfg.get("loaded_at"))
    store_state = "ok" if store.get("ok") else "UNREACHABLE (serving last known state)"
    lines = [
        f"router  {status.get('version', '?')}  pid {status.get('pid', '?')}  "
        f"data plane {status.get('data_plane', '?')}",
        f"config  {cfg.get('hash') or '-'}  loaded {loaded}  {cfg.get('path') or ''}".rstrip(),
        f"store   {store.get('kind', '?')}  {store_state}",
    ]
    lines += _store_notes(store)
    if cfg.get("last_reload_error"):
        refused = when(cfg.get("last_reload_error_at"))
        lines.append(f"reload  REFUSED {refused}; the previous config keeps serving:")
        lines += [f"        {line}" for line in str(cfg["last_reload_error"]).splitlines()]
    return [*lines, "", *route_lines(status.get("routes", []))]


def _store_notes(store: dict[str, Any]) -> list[str]:
    """What the store lost and what this replica wrote back, for `status`."""
    lines = []
    if store.get("data_lost_at"):
        lines.append(f"        lost its data {when(store['data_lost_at'])} (new epoch)")
    if store.get("restoring"):
        lines.append(f"        RESTORING {', '.join(store['restoring'])} from this replica")
    lines += [
        f"        {when(r.get('at'))} {r.get('route')}: {r.get('reason')}"
        for r in store.get("restored", [])[-3:]
    ]
    return lines


def _pct(rate: dict[str, Any] | None) -> str:
    """`97.5% [96.4-98.3] n=1200` from a Rate's dict; `-` before any data."""
    if not rate or not rate.get("n"):
        return "- (n=0)"
    lo, hi = 100 * float(rate["lo"]), 100 * float(rate["hi"])
    return f"{100 * float(rate['rate']):.1f}% [{lo:.1f}-{hi:.1f}] n={rate['n']}"


def _ms(pair: list[Any] | None) -> str:
    values = pair or [None, None]
    return " / ".join("-" if v is None else f"{1000 * float(v):g}ms" for v in values)


def _field_rows(pair: dict[str, Any]) -> list[list[str]]:
    noise = (pair.get("noise") or {}).get("fields", {})
    rows = [["  FIELD", "ITEMS AGREEING", "REQUESTS", "MEAN DIFF", "NOISE"]]
    for name, f in pair.get("fields", {}).items():
        diff = f.get("mean_diff")
        mark = "-"
        if name in noise:
            mark = (
                "noisy" if noise[name]["noisy"] else f"+{100 * (noise[name]['excess'] or 0):.1f}%"
            )
        rows.append(
            [
                f"  {name}",
                _pct(f.get("agreement")),
                _pct(f.get("requests")),
                "-" if diff is None else f"{diff:.4g}",
                mark,
            ]
        )
    return rows


def pair_lines(title: str, pair: dict[str, Any]) -> list[str]:
    """One mirrored backend against the primary: agreement, fields, latency."""
    m = pair.get("mirror", {})
    lines = [
        f"{title}: items agreeing {_pct(pair.get('agreement'))}, "
        f"requests {_pct(pair.get('requests'))}",
        f"  status mismatches {(pair.get('status_mismatch') or {}).get('k', 0)}  "
        f"no answer {pair.get('no_answer', 0)}  sent {m.get('sent', 0)}  "
        f"dropped {m.get('dropped', 0)} (shadow down {m.get('down', 0)})  "
        f"errors {m.get('errors', 0)}",
        f"  latency p50 {_ms(pair.get('latency_p50'))}  p99 {_ms(pair.get('latency_p99'))}"
        "  (primary / shadow)",
    ]
    rows = _field_rows(pair)
    lines += table(rows) if len(rows) > 1 else []
    return lines + [f"  ! {p['why']}" for p in pair.get("problems") or []]


def shadow_lines(body: dict[str, Any]) -> list[str]:
    """A route's shadow figures (GET /v1/routes/NAME/shadow) as text."""
    primary = str(body.get("primary") or "primary")
    lines: list[str] = []
    for backend, pair in body.get("shadows", {}).items():
        lines += pair_lines(
            f"shadow {backend} vs {primary}",
            pair,
        )
    if body.get("secondary"):
        lines += pair_lines(f"noise floor (secondary vs {primary})", body["secondary"])[:1]
    queue = body.get("local", {}).get("queue", {})
    lines.append(
        f"mirror offered {body.get('offered', 0)}  dropped {body.get('dropped', 0)}  "
        f"oversize body {body.get('oversize_body', 0)}  "
        f"oversize answer {body.get('oversize_answer', 0)}  "
        f"queue {', '.join(f'{k} {v}' for k, v in queue.items()) or '-'}"
    )
    return lines


def _sec(value: Any) -> str:
    return "-" if value is None else f"{1000 * float(value):.0f}ms"


def stream_lines(body: dict[str, Any]) -> list[str]:
    """Stream timing per arm (GET /v1/routes/NAME/streams) as a table."""
    arms = body.get("arms") or []
    if not arms:
        return []
    rows = [["STREAMS", "ROLE", "N", "TTFT P50/P95", "INTER-TOKEN P50/P95", "TOKENS", "TOTAL"]]
    for a in arms:
        per = a.get("tokens_per_stream")
        rate = a.get("tokens_per_second")
        tokens = "-" if per is None else f"{per:.1f}/stream" + (f", {rate:.1f}/s" if rate else "")
        rows.append(
            [
                str(a.get("backend")),
                str(a.get("role")),
                str(a.get("streams", 0)),
                f"{_sec(a.get('ttft_p50'))} / {_sec(a.get('ttft_p95'))}",
                f"{_sec(a.get('inter_token_p50'))} / {_sec(a.get('inter_token_p95'))}",
                tokens,
                f"{_sec(a.get('total_mean'))} mean",
            ]
        )
    return table(rows)


def diff_lines(records: list[dict[str, Any]]) -> list[str]:
    """Sampled disagreements, each with both answers (GET /v1/routes/NAME/diffs)."""
    lines: list[str] = []
    for r in records:
        status = "/".join(str(x) for x in r.get("status", []))
        latency = "/".join(f"{x:g}" for x in r.get("latency_ms", []))
        where = f"  {r['target']}" if r.get("target") else ""
        items = r.get("items")
        batch = f"  items {items[0]} compared, {items[1]} agree" if items else ""
        lines.append(
            f"request {r.get('id', '-')}  shadow {r.get('backend', '-')}{where}  "
            f"status {status}  latency {latency} ms (primary/shadow){batch}"
        )
        for f in r.get("fields", []):
            row = f" row {f['item']}" if "item" in f else ""
            lines.append(
                f"  {f.get('field')}{row}: {f.get('reason')}  "
                f"primary {f.get('primary')}  shadow {f.get('shadow')}"
            )
        for key in ("paths", "errors"):
            if r.get(key):
                lines.append(f"  {key}: {', '.join(str(x) for x in r[key])}")
        for key in ("request", "primary", "shadow"):
            if key in r:
                lines.append(f"  {key + ':':8} {r[key]}")
        lines.append("")
    return lines


def aborted(routes: list[dict[str, Any]]) -> bool:
    return any((r.get("rollout") or {}).get("phase") == "aborted" for r in routes)


# -- drift and feedback ------------------------------------------------------------
BAR_WIDTH = 20


def _bar(psi: float, threshold: float) -> str:
    """A bar scaled so the threshold sits at the middle; full means 2x the threshold."""
    filled = min(BAR_WIDTH, round(psi / (2 * threshold) * BAR_WIDTH)) if threshold > 0 else 0
    return "#" * filled + "." * (BAR_WIDTH - filled)


def drift_lines(body: dict[str, Any]) -> list[str]:
    """One block per stream and backend: feature, PSI, threshold, bar, JS, KS, n, alarm."""
    lines = [
        f"route {body.get('route')}  window {body.get('window')}s  "
        f"min_samples {body.get('min_samples')}"
    ]
    for stream in body.get("streams", []):
        ref = stream.get("reference", {})
        if ref.get("state") != "fitted":
            lines.append(
                f"{stream['stream']}: collecting a reference "
                f"({ref.get('have', 0)}/{ref.get('need', '?')})"
            )
            continue
        for series in stream.get("series", []):
            who = f" of {series['backend']}" if series.get("backend") else ""
            lines.append(f"{stream['stream']}{who}:")
            rows = [["feature", "psi", "threshold", "", "js", "ks", "n", ""]]
            for f in series.get("features", []):
                ks = "-" if f.get("ks") is None else f"{f['ks']:.3f}"
                rows.append(
                    [
                        f["name"],
                        f"{f['psi']:.3f}",
                        f"{f['threshold']:g}",
                        _bar(f["psi"], f["threshold"]),
                        f"{f['js']:.3f}",
                        ks,
                        str(f["n"]),
                        "ALARM" if f.get("alarm") else "",
                    ]
                )
            lines += ["  " + line for line in table(rows)]
    return lines


def _accuracy(f: dict[str, Any]) -> str:
    """`91.0% [88.1-93.2] n=300` from one arm's figures; `-` without labels."""
    if f.get("accuracy") is None:
        return "-"
    return _pct({"rate": f["accuracy"], "lo": f.get("lo", 0), "hi": f.get("hi", 1), "n": f["n"]})


def _arm_rows(arms: dict[str, Any]) -> list[list[str]]:
    rows = [["  ARM", "ACCURACY", "VALUES", "MAE"]]
    for name, f in arms.items():
        mae = f"{f['mae']:.4g}" if f.get("mae") is not None else "-"
        rows.append([f"  {name}", _accuracy(f), str(f.get("n_values", 0)), mae])
    return rows


def feedback_lines(body: dict[str, Any]) -> list[str]:
    """Accuracy per arm: the last hour, the sliding window, the series per minute, and
    the accuracy test of each arm (reference, CUSUM, alarm)."""
    head = f"route {body.get('route')}: {body.get('matched', 0)} labels matched in the last hour"
    lines = [head, *table(_arm_rows(body.get("backends", {})))]
    minutes = int(body.get("window_seconds", 600)) // 60
    lines += [f"last {minutes} minutes:", *table(_arm_rows(body.get("window", {})))]
    arms = sorted({a for point in body.get("series", []) for a in point["backends"]})
    if arms:
        rows = [["  MINUTE (UTC)", *arms]]
        for point in body.get("series", [])[-15:]:
            stamp = time.strftime("%H:%M", time.gmtime(point["at"]))
            per = point["backends"]
            rows.append([f"  {stamp}", *(_short(per.get(a, {})) for a in arms)])
        lines += ["per minute (accuracy, labels):", *table([[*r, ""] for r in rows])]
    for arm, c in (body.get("accuracy_test") or {}).items():
        ref = "-" if c.get("reference") is None else f"{100 * c['reference']:.1f}%"
        state = "ALARM" if c.get("alarm") else "ok"
        if c.get("p0") is None:  # the test holds the arm to nothing yet
            lines.append(
                f"accuracy test {arm}: collecting its reference, {c.get('reference_n', 0)} "
                f"of {REFERENCE} labels ({ref} so far)"
            )
            continue
        lines.append(
            f"accuracy test {arm}: {state}  reference {ref} of {c.get('reference_n', 0)} labels  "
            f"CUSUM {c.get('cusum')} (alarm at {c.get('threshold')})"
        )
    return lines


def _short(f: dict[str, Any]) -> str:
    return f"{100 * f['accuracy']:.0f}% {f['n']}" if f.get("accuracy") is not None else "-"


# -- the automation ladder -----------------------------------------------------------
def automation_lines(a: dict[str, Any]) -> list[str]:
    """The level, the next step and what it waits for, and the evidence behind it."""
    level = a.get("level", "?")
    lines = [
        f"level {level}  for {_age(float(a.get('seconds') or 0))}  "
        f"(advance {a.get('advance', 'manual')}, up to {a.get('advance_to', '-')})"
    ]
    nxt, held = a.get("next"), a.get("held")
    if nxt:
        lines.append(f"next: {nxt['text']}  -> {nxt['verdict'].upper()}")
    if held and held.get("verdict") == "fail":
        lines.append(f"FAILING at {level}: {held['text']}")
    model, human = a.get("model_requests", 0), a.get("human_requests", 0)
    deferral = a.get("deferral_rate")
    shown = f"  deferral {100 * deferral:.1f}%" if deferral is not None else ""
    lines.append(f"requests at this level: model {model}, human {human}{shown}")
    agreement = a.get("agreement") or {}
    if agreement:
        lines.append(f"agreement with the human: items {_pct(agreement.get('agreement'))}")
        for name, f in (agreement.get("fields") or {}).items():
            lines.append(f"  {name}: {_pct(f.get('agreement'))}")
    if a.get("accuracy"):
        lines += ["accuracy from labels at this level:", *table(_arm_rows(a["accuracy"]))]
    fallbacks = a.get("fallbacks") or {}
    for when_, words in (
        ("at this level", fallbacks.get("level")),
        ("in all", fallbacks.get("total")),
    ):
        if words:
            listed = ", ".join(f"{w} {n}" for w, n in sorted(words.items()))
            lines.append(f"fallbacks to the human {when_}: {listed}")
    if a.get("alarms"):
        lines.append(f"ACCURACY ALARM: {', '.join(a['alarms'])}")
    return lines


def history_line(e: dict[str, Any]) -> str:
    """One history entry: when, who, what, from -> to, why."""
    actor = e.get("actor") or e.get("by") or e.get("updated_by") or "-"
    move = f"{e['from']} -> {e['to']}  " if e.get("from") and e.get("to") else ""
    reason = str(e.get("reason", ""))
    if move and reason.startswith(f"{e['from']} -> {e['to']}"):
        reason = reason[len(f"{e['from']} -> {e['to']}") :].strip()
    return f"{when(e.get('ts'))}  {actor}  {e.get('event', '-')}  {move}{reason}".rstrip()
