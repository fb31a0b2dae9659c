"""Helpers the Python benchmarks share: progress lines, free ports, waiting for a server,
percentiles. Stdlib only; import it from a script in bench/ (its folder is on sys.path)."""
import http.client
import socket
import sys
import time


def log(msg):
    """A progress line on stderr (the summary goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=120, path="/readyz"):
    """Waits until opsdb serve (proc, on port) answers path with 200; exits the benchmark when
    the process ends or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"opsdb serve exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit("opsdb serve did not get ready")


def percentile(sorted_values, p):
    """The p-th percentile (0..100) of sorted values, interpolated; NaN when there are none."""
    if not sorted_values:
        return float("nan")
    rank = p / 100 * (len(sorted_values) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (rank - lo) * (sorted_values[hi] - sorted_values[lo])
