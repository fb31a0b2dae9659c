#!/usr/bin/python3
"""Helper of bench/scale.sh: times HTTP queries on one kept-alive connection, and asks opsdb's
SQL route for single values.

usage:
  scale_query.py time BASE_URL RUNS SPEC_FILE OUT_TSV BODY_DIR
      SPEC_FILE: one request per line, "name<TAB>path?query". Each is sent RUNS times in a row
      on one kept-alive HTTP/1.1 connection. Appends to OUT_TSV one line per request:
      name, HTTP codes seen, first ms, p50 ms, p95 ms (nearest rank over all RUNS), max ms,
      bytes of the last answer, shape of the last answer (rows=N, or series=S points=P).
      The last answer is kept in BODY_DIR/name.body. Progress goes to stderr.
  scale_query.py sql BASE_URL SQL
      Prints the values of the first row, tab-separated (empty when the query fails; the error
      goes to stderr, the exit status is 1).
"""
import http.client
import json
import math
import os
import sys
import time
import urllib.parse


def connect(u):
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def get(conn, u, path):
    """(code, body, seconds); reconnects once when a kept-alive connection was dropped."""
    for attempt in (0, 1):
        t0 = time.monotonic()
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            return conn, r.status, body, time.monotonic() - t0
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conn = connect(u)
            if attempt == 1:
                return conn, 0, str(exc).encode(), time.monotonic() - t0
    raise AssertionError("unreachable")


def shape(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return "-"
    if isinstance(doc, dict):
        if isinstance(doc.get("series"), list):  # opsdb /api/v1/series
            s = doc["series"]
            return "series=%d points=%d" % (len(s), sum(len(x.get("values", [])) for x in s))
        data = doc.get("data")
        if isinstance(data, dict) and isinstance(data.get("result"), list):  # Prometheus API
            s = data["result"]
            return "series=%d points=%d" % (len(s), sum(len(x.get("values", [])) for x in s))
        if "row_count" in doc:  # opsdb views and SQL
            return "rows=%s" % doc["row_count"]
        if "error" in doc:
            return "error"
    return "-"


def nearest_rank(sorted_values, p):
    k = max(1, math.ceil(len(sorted_values) * p / 100.0))
    return sorted_values[min(k, len(sorted_values)) - 1]


def cmd_time(base, runs, spec, out, body_dir):
    u = urllib.parse.urlsplit(base)
    conn = connect(u)
    os.makedirs(body_dir, exist_ok=True)
    with open(spec) as fh:
        requests = [line.rstrip("\n").split("\t", 1) for line in fh if line.strip()]
    with open(out, "a") as res:
        for name, path in requests:
            codes, ms, body = set(), [], b""
            for _ in range(runs):
                conn, code, body, secs = get(conn, u, path)
                codes.add(code)
                ms.append(secs * 1000.0)
            srt = sorted(ms)
            with open(os.path.join(body_dir, name + ".body"), "wb") as fh:
                fh.write(body)
            row = [name, ",".join(str(c) for c in sorted(codes)), "%.1f" % ms[0],
                   "%.1f" % nearest_rank(srt, 50), "%.1f" % nearest_rank(srt, 95),
                   "%.1f" % srt[-1], str(len(body)), shape(body)]
            res.write("\t".join(row) + "\n")
            res.flush()
            print("  %-34s %-7s p50 %8s ms  p95 %8s ms  %s" % (name, row[1], row[3], row[4], row[7]),
                  file=sys.stderr)
    conn.close()


def cmd_sql(base, sql):
    u = urllib.parse.urlsplit(base)
    conn = connect(u)
    conn, code, body, _ = get(conn, u, "/api/v1/query?" + urllib.parse.urlencode({"sql": sql}))
    try:
        doc = json.loads(body)
        row = doc["rows"][0]
        print("\t".join("" if row[c] is None else str(row[c]) for c in doc["columns"]))
    except (ValueError, KeyError, IndexError, TypeError):
        print("scale_query.py: %s -> %s %s" % (sql, code, body[:300].decode("utf-8", "replace")),
              file=sys.stderr)
        return 1
    return 0


def main(argv):
    if len(argv) >= 6 and argv[0] == "time":
        cmd_time(argv[1], int(argv[2]), argv[3], argv[4], argv[5])
        return 0
    if len(argv) == 3 and argv[0] == "sql":
        return cmd_sql(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
