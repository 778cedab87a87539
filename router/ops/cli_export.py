"""`routerctl export ROUTE --since 1h --format jsonl|parquet [--output FILE]`.

Reads `GET /v1/routes/ROUTE/export` (router/capture/export.py: captured records
joined with their delayed labels, one line per item of a batch) as it streams,
and writes it to FILE or stdout. Parquet is written here, from the same lines,
with pyarrow when it is installed (the optional `parquet` extra); the router
itself never needs it.
"""

from __future__ import annotations

import argparse
import io
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any

TIMEOUT = 300.0  # an export of a big window takes a while to read


def fetch(base: str, token: str | None, route: str, since: str) -> IO[bytes]:
    query = urllib.parse.urlencode({"since": since, "format": "jsonl"})
    req = urllib.request.Request(
        f"{base}/v1/routes/{urllib.parse.quote(route, safe='')}/export?{query}"
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    resp: IO[bytes] = urllib.request.urlopen(req, timeout=TIMEOUT)
    return resp


def write_parquet(lines: IO[bytes], output: str) -> int:
    """The rows as a Parquet file (nested values kept as JSON text columns)."""
    try:
        import pyarrow as pa
        import pyarrow.json as pj
        import pyarrow.parquet as pq
    except ImportError:
        print(
            "--format parquet needs pyarrow: pip install 'deploy-router[parquet]'", file=sys.stderr
        )
        return 2
    data = lines.read()
    table: Any = pj.read_json(io.BytesIO(data)) if data.strip() else pa.table({})
    pq.write_table(table, output)
    print(f"{table.num_rows} rows -> {output}", file=sys.stderr)
    return 0


def run(base: str, token: str | None, args: argparse.Namespace) -> int:
    if args.format == "parquet" and not args.output:
        print("--format parquet needs --output FILE", file=sys.stderr)
        return 2
    try:
        resp = fetch(base, token, args.route, args.since)
    except urllib.error.HTTPError as err:
        with err:
            print(err.read().decode("utf-8", "replace").strip(), file=sys.stderr)
        return 1
    with resp:
        if args.format == "parquet":
            return write_parquet(resp, args.output)
        out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        rows = 0
        try:
            for line in resp:
                out.write(line)
                rows += 1
        finally:
            if args.output:
                out.close()
    if args.output:
        print(f"{rows} rows -> {args.output}", file=sys.stderr)
    return 0
