"""The Graphite plaintext receiver of `opsdb serve`: a real collectd (cpu, memory and load
plugins, write_graphite over TCP) delivers samples that arrive in system_metrics with the host,
component and metric its naming means; raw sockets check templates from the config file,
Graphite 1.1 tags, UDP datagrams of many lines, bad lines, NaN, too long lines and many
connections.

Each test starts its own server with the receiver on free loopback ports (port 0; the ports are
read from the server's log)."""

import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import unique, wait_until


def start_graphite_server(server_factory, *extra, config=None):
    """A server with Graphite on UDP and TCP; returns (server, udp_port, tcp_port)."""
    srv = server_factory("--set", "graphite.udp=127.0.0.1:0", "--set",
                         "graphite.tcp=127.0.0.1:0", *extra, config=config)
    ports = {}

    def found():
        for proto, port in re.findall(r"graphite: listening on (udp|tcp) \S+ \(port (\d+)\)",
                                      srv.run_stderr()):
            ports[proto] = int(port)
        return len(ports) == 2

    assert wait_until(found, timeout=10), srv.run_stderr()
    return srv, ports["udp"], ports["tcp"]


def metric(srv, name):
    text = srv.get("/metrics").text
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def samples(srv, where, want=1, timeout=10):
    sql = ("SELECT host, component, metric, value, labels, ts FROM system_metrics "
           f"WHERE {where} ORDER BY metric, ts")
    rows = wait_until(lambda: len(srv.query(sql)) >= want and srv.query(sql), timeout=timeout)
    return rows or srv.query(sql)


def send_tcp(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)


COLLECTD_CONF = """
Hostname "{host}"
FQDNLookup false
Interval 1
BaseDir "{base}"
PIDFile "{base}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "opsdb">
    Host "127.0.0.1"
    Port "{port}"
    Protocol "tcp"
    Prefix "collectd."
    EscapeCharacter "_"
  </Node>
</Plugin>
"""


@pytest.mark.skipif(not shutil.which("collectd") and not shutil.which("/usr/sbin/collectd"),
                    reason="collectd is not installed (Debian package collectd-core)")
def test_collectd_write_graphite(server_factory, tmp_path):
    srv, _, tcp = start_graphite_server(server_factory)
    name = unique("cd")
    conf = tmp_path / "collectd.conf"
    conf.write_text(COLLECTD_CONF.format(host=f"{name}.example.org", base=tmp_path, port=tcp))
    log = open(tmp_path / "collectd.log", "w")
    proc = subprocess.Popen(["/usr/sbin/collectd", "-C", str(conf), "-f"], stdout=log,
                            stderr=log)
    host = f"{name}_example_org"  # write_graphite escapes the dots of the host name
    try:
        # cpu rates need two readings: wait for all three plugins
        def plugins():
            rows = srv.query("SELECT DISTINCT component FROM system_metrics "
                             f"WHERE host = '{host}'")
            return {r["component"] for r in rows} >= {"cpu", "memory", "load"}

        assert wait_until(plugins, timeout=30, interval=0.5), (
            (tmp_path / "collectd.log").read_text() + srv.run_stderr())
        assert proc.poll() is None, (tmp_path / "collectd.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    rows = srv.query("SELECT component, metric, value, labels, ts FROM system_metrics "
                     f"WHERE host = '{host}'")
    metrics = {(r["component"], r["metric"]) for r in rows}
    assert ("memory", "memory_used") in metrics, metrics
    assert ("load", "load_shortterm") in metrics, metrics
    assert ("cpu", "cpu_user") in metrics or ("cpu", "cpu_idle") in metrics, metrics
    cpu = [r for r in rows if r["component"] == "cpu"]
    assert all(re.fullmatch(r'\{"instance":"\d+"\}', r["labels"]) for r in cpu), cpu[:3]
    mem = [r["value"] for r in rows if r["metric"] == "memory_used"]
    assert all(v > 0 for v in mem)
    now = time.time() * 1000
    assert all(now - 120000 < r["ts"] <= now + 1000 for r in rows)
    # each batch noted the sending host; the samples were counted
    assert metric(srv, 'opsdb_graphite_lines_total{result="stored"}') >= len(rows)
    assert metric(srv, "opsdb_graphite_rows_written_total") >= len(rows)


def test_templates_from_config_and_tags(server_factory):
    config = """
graphite:
  templates:
    - "servers.* .host.component.metric* env=prod"
    - "apps.*.eu .service.region.host.metric"
"""
    srv, _, tcp = start_graphite_server(server_factory, config=config)
    m = unique("tp")
    ts = int(time.time()) - 10
    send_tcp(tcp, (f"servers.{m}a.nginx.requests.total 10 {ts}\n"
                   f"apps.billing.eu.{m}b.latency 0.25 {ts}\n"
                   f"netdata.{m}c.system.cpu.user 1.5 {ts}\n"
                   f"{m}d.disk.used;dc=eu;component=sda 7 {ts}\n"
                   f"collectd.{m}e.cpu-3.cpu-idle 99 {ts}\n").encode())
    rows = samples(srv, f"host LIKE '{m}%'", want=5)
    got = {r["host"]: (r["component"], r["metric"], r["labels"], r["value"]) for r in rows}
    assert got == {
        f"{m}a": ("nginx", "requests_total", '{"env":"prod"}', 10),
        f"{m}b": ("", "latency", '{"region":"eu","service":"billing"}', 0.25),
        f"{m}c": ("system", "cpu_user", "{}", 1.5),
        f"{m}d": ("sda", "disk_used", '{"dc":"eu"}', 7),
        f"{m}e": ("cpu", "cpu_idle", '{"instance":"3"}', 99),
    }, rows
    assert all(r["ts"] == ts * 1000 for r in rows)


def test_udp_datagrams_of_many_lines(server_factory):
    srv, udp, _ = start_graphite_server(server_factory)
    m = unique("ud")
    ts = int(time.time()) - 5
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto("".join(f"{m}.m{i} {i} {ts}\n" for i in range(50)).encode(), ("127.0.0.1", udp))
    rows = samples(srv, f"host = '{m}'", want=50)
    assert len(rows) == 50
    assert sorted(r["value"] for r in rows) == list(range(50))


def test_bad_lines_nan_and_long_lines(server_factory):
    srv, _, tcp = start_graphite_server(server_factory, "--set", "graphite.max_line_size=256")
    m = unique("bl")
    ts = int(time.time()) - 5
    send_tcp(tcp, (f"{m}.ok1 1 {ts}\n"
                   "not a graphite line at all\n"
                   f"{m}.bad notanumber {ts}\n"
                   f"{m}.nan nan {ts}\n"
                   f"{m}.inf -inf {ts}\n"
                   f"{m}.{'x' * 1000} 1 {ts}\n"
                   f"{m}..empty 1 {ts}\n"
                   f"{m}.ok2 2 {ts}\n").encode())
    rows = samples(srv, f"host = '{m}'", want=2)
    assert sorted(r["metric"] for r in rows) == ["ok1", "ok2"]
    assert wait_until(lambda: metric(srv, 'opsdb_graphite_lines_total{result="invalid"}') == 4)
    assert metric(srv, 'opsdb_graphite_lines_total{result="nan"}') == 2
    assert metric(srv, "opsdb_graphite_truncated_total") == 1
    log = srv.run_stderr()
    assert re.search(r"graphite: 127\.0\.0\.1:\d+: line dropped: value 'notanumber' is not a "
                     r"number", log), log


def test_many_connections(server_factory):
    srv, _, tcp = start_graphite_server(server_factory, "--set", "graphite.max_connections=8")
    m = unique("mc")
    ts = int(time.time()) - 5
    conns = [socket.create_connection(("127.0.0.1", tcp), timeout=5) for _ in range(20)]
    try:
        for i, c in enumerate(conns):
            try:
                c.sendall(f"{m}.c{i} {i} {ts}\n".encode())
            except OSError:
                pass  # a refused connection may be closed already
        # held open: 8 are served, the other 12 are closed at accept
        assert wait_until(
            lambda: metric(srv, 'opsdb_graphite_connections_total{result="refused"}') == 12)
        rows = samples(srv, f"host = '{m}'", want=8)
        assert len(rows) == 8
    finally:
        for c in conns:
            c.close()
    assert wait_until(lambda: metric(srv, "opsdb_graphite_connections_open") == 0)
    # the receiver goes on serving
    send_tcp(tcp, f"{m}.after 1 {ts}\n".encode())
    assert samples(srv, f"host = '{m}' AND metric = 'after'")


def test_bad_template_is_a_clear_error(server_factory):
    srv = server_factory("--set", "graphite.tcp=127.0.0.1:0", "--set",
                         "graphite.templates=a.* .host.metric*.x", start=False)
    with pytest.raises(Exception) as exc:
        srv.start()
    assert "graphite.templates line 1: metric* must be last" in str(exc.value)
