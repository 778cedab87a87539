"""The `drift_cost` scenario: what watching a route for drift costs per request.

Two figures. The pure one: `router.core.drift.measure_observe_cost`, µs per
request of `DriftTracker.observe` with numpy's binning amortised (an 8-number
vector and a label). The whole one: the router's CPU µs per request with a
`drift:` block on its only route (inputs and outputs, so the request path keeps
both bodies and the background pass parses them every 100 ms) minus the same
router without it, measured A B A B like every other scenario. The second
includes the json parsing and extraction the first leaves out, so it is the
one to compare with the 10 µs budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench import targets

if TYPE_CHECKING:  # bench.scenarios registers this scenario: import it lazily, no cycle
    from bench.scenarios import Context, Section

BUDGET_US = 10.0

_DRIFT_YAML = """listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin_port}}}
logging: {{access_sample: 0}}
backends:
  b: {{url: http://127.0.0.1:{backend_port}}}
routes:
  - name: all
    match: {{path_prefix: /}}
    drift: {{inputs: [$.features], outputs: [$.label], reference: 2000}}
    strategy: {{split: {{weights: {{b: 100}}}}}}
"""


def drift_cost(ctx: Context) -> Section:
    """µs per request of drift: the pure observe, and the router's CPU with vs without."""
    from bench.scenarios import Check, Load, Section, _backend_port, _row, alternate
    from bench.scenarios import Context as Ctx
    from router.core.drift import measure_observe_cost

    s = ctx.settings
    sec = Section(
        f"drift cost: a drift block on the route vs none, wrk -t{s.threads} "
        f"-c{s.connections}, median of {s.runs}",
        ["target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"],
    )
    observe_us = measure_observe_cost()
    sec.lines.append(f"DriftTracker.observe (8-number vector + label): {observe_us:.2f} µs/request")
    sec.checks.append(Check("drift observe µs/request", observe_us, BUDGET_US, " µs"))
    sec.data["observe_us"] = observe_us
    plain = ctx.targets.get("router")
    if plain is None:
        sec.lines.append("router comparison skipped: no router target")
        return sec
    watched = targets.start_router(
        ctx.workdir, _backend_port(ctx), name="router-drift", config=_DRIFT_YAML
    )
    try:
        pair = {"router": plain, "router-drift": watched}
        load = Load(s.threads, s.connections, s.duration, s.warmup)
        med = alternate(Ctx(s, ctx.workdir, pair, ctx.notes), s.runs, load)
    finally:
        watched.stop()
    sec.rows += [_row(name, m) for name, m in med.items()]
    extra = med["router-drift"]["cpu_us"] - med["router"]["cpu_us"]
    sec.data["router"] = {**med, "extra_cpu_us": extra}
    sec.lines.append(f"router CPU per request added by drift (parse + observe): {extra:+.1f} µs")
    sec.checks.append(Check("drift extra router CPU µs/request", extra, BUDGET_US, " µs"))
    return sec
