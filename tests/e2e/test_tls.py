"""Transport security: `opsdb serve --tls-cert/--tls-key` (HTTPS, TLS 1.2 and 1.3 only, the
certificate reread on SIGHUP), certificate verification in every client (the agent, webhook
receivers, scrape jobs, the CLI) and the security headers on every response.

Each test makes its own CA and certificates with the openssl command line, for 127.0.0.1
(subjectAltName IP:127.0.0.1), and talks to the real binary over loopback.
"""

import http.server
import json
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest
import requests

from conftest import now_ms, unique, wait_until
from pki import Pki
from test_notify_receivers import RULES, cpu

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


# ---- a CA and certificates, made with openssl ------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


def tls_server(server_factory, pki, *args, serial=0x1001, config=None, env=None):
    """An opsdb serving HTTPS with a certificate of pki (the files tls.pem and tls.key in the
    CA's directory); its requests session verifies against the CA."""
    cert, key = pki.server_cert("tls", serial)
    srv = server_factory("--tls-cert", cert, "--tls-key", key, *args, config=config, env=env,
                         start=False)
    srv.scheme = "https"
    srv.session.trust_env = False  # else REQUESTS_CA_BUNDLE would override verify
    srv.session.verify = str(pki.ca)
    srv.start()
    return srv


def handshake(port, ca=None, min_version=None, max_version=None, weak=False):
    """One TLS handshake with 127.0.0.1:port; returns (protocol version, peer certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(cafile=str(ca))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if weak:  # let this OpenSSL offer TLS 1.0 and 1.1 at all (its default level refuses them)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        if min_version:
            ctx.minimum_version = min_version
        if max_version:
            ctx.maximum_version = max_version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.version(), s.getpeercert()


def metric(srv, name, labels=""):
    text = srv.get("/metrics").text
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not in /metrics"
    return float(m.group(1))


# ---- the server ------------------------------------------------------------------------------


def test_https_with_a_verified_certificate(server_factory, pki):
    srv = tls_server(server_factory, pki)
    r = srv.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    for k, v in SECURITY_HEADERS.items():
        assert r.headers[k] == v
    # curl with the CA agrees; without it (the system's CAs) the certificate is not trusted
    cp = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca),
                         srv.url + "/healthz"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0 and json.loads(cp.stdout) == {"status": "ok"}, cp.stderr
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(srv.url + "/healthz", timeout=10)
    # rows go in and come out over HTTPS
    host = unique("h")
    r = srv.ingest("system_metrics", [{"ts": now_ms(), "host": host, "component": "c",
                                       "metric": "m", "value": 1.5}])
    assert r.status_code == 200, r.text
    assert srv.count("system_metrics", f"host = '{host}'") == 1
    assert f"serving {pki.dir / 'tls.pem'} (serial 1001" in srv.run_stderr()
    assert "on https://127.0.0.1:" in srv.run_stderr()
    assert metric(srv, "opsdb_http_tls_certificate_expiry_seconds") > time.time() + 86400


def test_only_tls_1_2_and_1_3(server_factory, pki):
    srv = tls_server(server_factory, pki)
    assert handshake(srv.port, pki.ca, max_version=ssl.TLSVersion.TLSv1_2)[0] == "TLSv1.2"
    assert handshake(srv.port, pki.ca, min_version=ssl.TLSVersion.TLSv1_3)[0] == "TLSv1.3"
    # the same weakened client reaches TLS 1.2, so a failure below is the server's refusal
    assert handshake(srv.port, weak=True, min_version=ssl.TLSVersion.TLSv1,
                     max_version=ssl.TLSVersion.TLSv1_2)[0] == "TLSv1.2"
    before = metric(srv, "opsdb_http_tls_handshake_failures_total")
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(srv.port, weak=True, min_version=old, max_version=old)
    assert wait_until(lambda: metric(srv, "opsdb_http_tls_handshake_failures_total")
                      >= before + 2, timeout=5)
    assert re.search(r"connection from 127\.0\.0\.1:\d+ closed before the TLS handshake",
                     srv.run_stderr())
    # openssl's client says the same
    cp = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-tls1_1",
                         "-cipher", "DEFAULT:@SECLEVEL=0"], input="", capture_output=True,
                        text=True, timeout=30)
    assert cp.returncode != 0, cp.stdout


def test_plain_http_to_the_https_port_fails(server_factory, pki):
    srv = tls_server(server_factory, pki)
    before = metric(srv, "opsdb_http_tls_handshake_failures_total")
    try:
        r = requests.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=10)
    except requests.exceptions.ConnectionError:
        pass
    else:
        pytest.fail(f"plain HTTP was answered: {r.status_code} {r.text!r}")
    assert wait_until(lambda: metric(srv, "opsdb_http_tls_handshake_failures_total")
                      == before + 1, timeout=5)
    assert srv.get("/healthz").status_code == 200  # the server goes on


def test_sighup_serves_a_new_certificate_and_keeps_it_when_the_new_one_is_bad(server_factory,
                                                                              pki):
    srv = tls_server(server_factory, pki, serial=0x1001)
    cert, key = pki.dir / "tls.pem", pki.dir / "tls.key"
    assert handshake(srv.port, pki.ca)[1]["serialNumber"] == "1001"
    keep_alive = requests.Session()  # a connection opened before the reload
    keep_alive.trust_env = False
    keep_alive.verify = str(pki.ca)
    assert keep_alive.get(srv.url + "/healthz", timeout=10).status_code == 200

    # a renewed certificate (same key, another serial) is served to new connections
    new_cert, _ = pki.server_cert("renewed", 0x2002, key=key)
    cert.write_bytes(new_cert.read_bytes())
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: handshake(srv.port, pki.ca)[1]["serialNumber"] == "2002",
                      timeout=10), srv.run_stderr()[-3000:]
    assert "reloaded " + str(cert) + " (serial 2002" in srv.run_stderr()
    assert keep_alive.get(srv.url + "/healthz", timeout=10).status_code == 200
    # a new key with its certificate works too
    other_cert, other_key = pki.server_cert("rekeyed", 0x3003)
    cert.write_bytes(other_cert.read_bytes())
    key.write_bytes(other_key.read_bytes())
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: handshake(srv.port, pki.ca)[1]["serialNumber"] == "3003",
                      timeout=10), srv.run_stderr()[-3000:]

    # a bad certificate file: the old pair stays, the log says why
    good_cert = cert.read_bytes()
    cert.write_text("not a certificate\n")
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "holds no usable PEM certificate" in srv.run_stderr(), timeout=10)
    assert handshake(srv.port, pki.ca)[1]["serialNumber"] == "3003"
    # a certificate whose key is not tls.key: refused the same way
    cert.write_bytes(new_cert.read_bytes())  # issued for the first key, not other_key
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "is not the key of the certificate" in srv.run_stderr(), timeout=10)
    assert handshake(srv.port, pki.ca)[1]["serialNumber"] == "3003"
    # a missing file
    cert.unlink()
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "cannot read" in srv.run_stderr(), timeout=10)
    assert handshake(srv.port, pki.ca)[1]["serialNumber"] == "3003"
    assert metric(srv, "opsdb_http_tls_reloads_total", '{result="ok"}') == 2
    assert metric(srv, "opsdb_http_tls_reloads_total", '{result="failed"}') == 3
    cert.write_bytes(good_cert)
    keep_alive.close()


@pytest.mark.parametrize("case", ["cert only", "key only", "missing", "not pem", "mismatch"])
def test_bad_certificate_files_stop_the_start(run_cli, pki, tmp_path, case):
    cert, key = pki.server_cert("tls", 1)
    _, other_key = pki.server_cert("other", 2)
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    args = {
        "cert only": (["--tls-cert", cert], "needs both a certificate and its key"),
        "key only": (["--tls-key", key], "needs both a certificate and its key"),
        "missing": (["--tls-cert", tmp_path / "none.pem", "--tls-key", key],
                    f"tls.cert: cannot read {tmp_path / 'none.pem'}: No such file"),
        "not pem": (["--tls-cert", tmp_path / "junk.pem", "--tls-key", key],
                    "holds no usable PEM certificate"),
        "mismatch": (["--tls-cert", cert, "--tls-key", other_key],
                     "is not the key of the certificate"),
    }[case]
    cp = run_cli("serve", "--db", tmp_path / "x.db", "--listen", "127.0.0.1:0", "--no-collect",
                 *args[0], timeout=60)
    assert cp.returncode == 1, cp.stderr
    assert args[1] in cp.stderr, cp.stderr
    cp = run_cli("serve", "--tls-cert", timeout=30)
    assert cp.returncode == 2 and "--tls-cert needs a file" in cp.stderr


# ---- the clients -----------------------------------------------------------------------------


def agent_summary(stderr):
    line = [x for x in stderr.splitlines() if "agent: stopped:" in x][-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_agent_verifies_the_server(server_factory, run_cli, pki, tmp_path):
    srv = tls_server(server_factory, pki)
    cp = run_cli("agent", "--server", srv.url, "--ca-file", pki.ca, "--once", "--spool",
                 tmp_path / "s1")
    assert cp.returncode == 0, cp.stderr
    sent = agent_summary(cp.stderr)
    assert sent["rows_sent"] > 0 and sent["spool_batches"] == 0
    assert srv.count("system_metrics") == sent["rows_sent"]
    # without the CA: the certificate is not trusted, the batch waits in the spool
    cp = run_cli("agent", "--server", srv.url, "--once", "--spool", tmp_path / "s2")
    assert cp.returncode == 1, cp.stderr
    assert "certificate" in cp.stderr and "spooling" in cp.stderr, cp.stderr
    assert agent_summary(cp.stderr)["spool_batches"] == 1
    assert srv.count("system_metrics") == sent["rows_sent"]
    # the config option and the environment say the same as the flag
    cp = run_cli("agent", "--server", srv.url, "--once", "--spool", tmp_path / "s2",
                 env={"OPSDB_AGENT_CA_FILE": pki.ca})
    assert cp.returncode == 0, cp.stderr
    assert agent_summary(cp.stderr)["batches_replayed"] == 1
    # a CA file that is not one is an error at start
    cp = run_cli("agent", "--server", srv.url, "--once", "--spool", tmp_path / "s3",
                 "--ca-file", tmp_path / "none.pem")
    assert cp.returncode == 1 and "agent.ca_file: cannot read" in cp.stderr, cp.stderr


def test_cli_verifies_the_server(server_factory, run_cli, pki, tmp_path):
    srv = tls_server(server_factory, pki)
    cp = run_cli("jobs", "list", "--format", "json", "--server", srv.url, "--ca-file", pki.ca)
    assert cp.returncode == 0, cp.stderr
    assert "jobs" in json.loads(cp.stdout)
    cp = run_cli("alerts", "list", "--server", srv.url, env={"OPSDB_CA_FILE": pki.ca})
    assert cp.returncode == 0, cp.stderr
    cp = run_cli("jobs", "list", "--server", srv.url)
    assert cp.returncode == 1 and "certificate" in cp.stderr, cp.stderr
    other = Pki(tmp_path / "other", "other-ca")
    cp = run_cli("alerts", "list", "--server", srv.url, "--ca-file", other.ca)
    assert cp.returncode == 1 and "certificate" in cp.stderr, cp.stderr


class HttpsTarget:
    """A Python HTTPS server on 127.0.0.1 with a certificate of pki: records POST bodies and
    serves a Prometheus page at /metrics."""

    def __init__(self, pki, name):
        cert, key = pki.server_cert(name, 0x4004)
        self.posts = []
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                target.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                page = b"# TYPE tls_target_value gauge\ntls_target_value 42.5\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def https_target(pki):
    target = HttpsTarget(pki, "target")
    yield target
    target.close()


def test_webhooks_verify_the_receiver(server_factory, pki, https_target, tmp_path):
    other = Pki(tmp_path / "other", "other-ca")
    (tmp_path / "rules.yaml").write_text(RULES)
    config = (
        "alerting:\n"
        "  rule_files: [rules.yaml]\n"
        "  default_rules: off\n"
        f"  ca_file: {pki.ca}\n"
        "  receivers:\n"
        f"    - {{name: trusted, webhook: {{url: '{https_target.url}/trusted'}}}}\n"
        f"    - {{name: wrong-ca, max_attempts: 1, webhook: {{url: '{https_target.url}/wrong', "
        f"ca_file: '{other.ca}'}}}}\n"
        "  route:\n"
        "    receiver: trusted\n"
        "    group_wait: 0s\n"
        "    routes:\n"
        "      - {receiver: wrong-ca, match: {team: e2e}, continue: true}\n"
        "      - {receiver: trusted, match: {team: e2e}}\n")
    srv = server_factory(config=config)
    cpu(srv, unique("h"), 99)
    assert wait_until(lambda: [p for p, _ in https_target.posts if p == "/trusted"], timeout=15), \
        srv.run_stderr()[-3000:]
    body = [b for p, b in https_target.posts if p == "/trusted"][0]
    assert body["alerts"][0]["labels"]["alertname"] == "E2EHighCPU"

    def log(receiver):
        return srv.query("SELECT status, http_status, error FROM notification_log "
                         f"WHERE receiver = '{receiver}'")

    assert wait_until(lambda: log("wrong-ca"), timeout=15)
    (row,) = log("wrong-ca")
    assert row["status"] == "failed" and not row["http_status"], row
    assert "certificate" in row["error"], row
    assert [p for p, _ in https_target.posts if p == "/wrong"] == []
    assert [x["status"] for x in log("trusted")] == ["ok"]


def test_bad_receiver_ca_file_stops_the_start(run_cli, tmp_path):
    (tmp_path / "c.yaml").write_text(
        "alerting:\n  receivers:\n"
        "    - {name: r, webhook: {url: 'https://127.0.0.1:9/x', ca_file: /nonexistent.pem}}\n"
        "  route: {receiver: r}\n")
    cp = run_cli("serve", "--db", tmp_path / "x.db", "--config", tmp_path / "c.yaml",
                 "--listen", "127.0.0.1:0", "--no-collect")
    assert cp.returncode == 1, cp.stderr
    assert "receivers[0].webhook.ca_file: cannot read /nonexistent.pem" in cp.stderr, cp.stderr


def test_scrapes_verify_the_target(server_factory, pki, https_target, tmp_path):
    other = Pki(tmp_path / "other", "other-ca")
    config = (
        "scrape:\n"
        "  configs:\n"
        "    - job_name: trusted\n"
        "      scrape_interval: 1s\n"
        f"      targets: ['{https_target.url}/metrics']\n"
        f"      tls_config: {{ca_file: '{pki.ca}'}}\n"
        "    - job_name: wrongca\n"
        "      scrape_interval: 1s\n"
        f"      targets: ['{https_target.url}/metrics']\n"
        f"      tls_config: {{ca_file: '{other.ca}'}}\n"
        "    - job_name: systemca\n"
        "      scrape_interval: 1s\n"
        f"      targets: ['{https_target.url}/metrics']\n")
    srv = server_factory(config=config)

    def up(job):
        rows = srv.query("SELECT value FROM system_metrics WHERE metric = 'up' AND "
                         f"component = '{job}' ORDER BY ts DESC LIMIT 1")
        return rows[0]["value"] if rows else None

    assert wait_until(lambda: up("trusted") == 1 and up("wrongca") == 0 and up("systemca") == 0,
                      timeout=20, interval=0.2), srv.run_stderr()[-3000:]
    assert srv.scalar("SELECT value FROM system_metrics WHERE metric = 'tls_target_value' "
                      "AND component = 'trusted' LIMIT 1") == 42.5
    assert srv.count("system_metrics", "metric = 'tls_target_value' AND component != 'trusted'") \
        == 0
    log = srv.run_stderr()
    assert re.search(r"scrape of https://127\.0\.0\.1:\d+/metrics \(job wrongca\) failed: .*"
                     r"certificate", log), log[-3000:]


def test_bad_scrape_tls_config_stops_the_start(run_cli, tmp_path):
    for tls_config, needle in (("{ca_file: /nonexistent.pem}",
                                "tls_config.ca_file: cannot read /nonexistent.pem"),
                               ("{insecure_skip_verify: true}",
                                "tls_config: unknown key 'insecure_skip_verify'")):
        (tmp_path / "c.yaml").write_text(
            "scrape:\n  configs:\n    - job_name: j\n      targets: ['127.0.0.1:9']\n"
            f"      tls_config: {tls_config}\n")
        cp = run_cli("serve", "--db", tmp_path / "x.db", "--config", tmp_path / "c.yaml",
                     "--listen", "127.0.0.1:0", "--no-collect")
        assert cp.returncode == 1 and needle in cp.stderr, cp.stderr


# ---- security headers ------------------------------------------------------------------------


def test_every_route_sends_the_security_headers(server_factory):
    srv = server_factory()
    routes = srv.get("/").json()["routes"]
    assert len(routes) > 20
    seen = 0
    for route in routes + [{"method": "GET", "path": "/no/such/route"},
                           {"method": "DELETE", "path": "/healthz"}]:
        path = re.sub(r"\{[a-z_]+\}", "x", route["path"])
        r = srv.request(route["method"], path, data=b"" if route["method"] == "POST" else None)
        for k, v in SECURITY_HEADERS.items():
            assert r.headers.get(k) == v, f"{route['method']} {path} -> {r.status_code}: {k}"
        csp = r.headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, (path, csp)
        assert "'unsafe-inline'" not in csp
        assert "Strict-Transport-Security" not in r.headers  # only under TLS
        seen += 1
    assert seen == len(routes) + 2
