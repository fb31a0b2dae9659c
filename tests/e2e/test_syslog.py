"""The syslog receiver of `opsdb serve`: util-linux's logger and a real rsyslogd send RFC 5424
and RFC 3164 messages over UDP and TCP (octet counting and newline framing); what is warning or
worse arrives in error_logs with its host, service, level and message. Raw sockets check the
edges: framing mixed on one connection, messages split across packets, too long messages, bad
octet counts, malformed messages, and more connections than allowed.

Each test starts its own server with the receivers on free loopback ports (port 0; the ports are
read from the server's log)."""

import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import unique, wait_until

HOSTNAME = socket.gethostname()


def start_syslog_server(server_factory, *extra):
    """A server with syslog on UDP and TCP; returns (server, udp_port, tcp_port)."""
    srv = server_factory("--set", "syslog.udp=127.0.0.1:0", "--set", "syslog.tcp=127.0.0.1:0",
                         *extra)
    ports = {}

    def found():
        for proto, port in re.findall(r"syslog: listening on (udp|tcp) \S+ \(port (\d+)\)",
                                      srv.run_stderr()):
            ports[proto] = int(port)
        return len(ports) == 2

    assert wait_until(found, timeout=10), srv.run_stderr()
    return srv, ports["udp"], ports["tcp"]


def rows_with(srv, marker, want=1, timeout=10):
    """error_logs rows whose message contains marker, once there are want of them."""
    sql = ("SELECT host, service, level, message, context FROM error_logs "
           f"WHERE message LIKE '%{marker}%' ORDER BY message")
    rows = wait_until(lambda: len(srv.query(sql)) >= want and srv.query(sql), timeout=timeout)
    return rows or srv.query(sql)


def metric(srv, name):
    """The value of one sample line of /metrics (name with its labels)."""
    text = srv.get("/metrics").text
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def logger(*args):
    subprocess.run(["logger", *args], check=True, timeout=10)


def send_tcp(port, *chunks, pause=0.05):
    """Sends the chunks over one TCP connection, pausing between them (so they arrive apart)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for c in chunks:
            s.sendall(c)
            time.sleep(pause)


def test_logger_formats_transports_and_priorities(server_factory):
    srv, udp, tcp = start_syslog_server(server_factory)
    m = unique("lg")
    cases = [
        # (transport flags, format flags, priority, tag, expected level)
        (["--udp"], ["--rfc5424"], "user.err", "app5424u", "error"),
        (["--udp"], ["--rfc3164"], "daemon.crit", "app3164u", "critical"),
        (["--tcp"], ["--rfc5424", "--octet-count"], "local0.warning", "appoct", "warning"),
        (["--tcp"], ["--rfc3164"], "auth.alert", "app3164t", "fatal"),
        (["--tcp"], ["--rfc5424"], "local7.emerg", "appnl", "fatal"),
    ]
    for i, (transport, fmt, prio, tag, _) in enumerate(cases):
        port = udp if transport == ["--udp"] else tcp
        logger("--server", "127.0.0.1", "--port", str(port), *transport, *fmt, "-p", prio, "-t",
               tag, f"{m} case{i} something failed")
    # below syslog.min_severity (warning): received, counted, not stored
    logger("--server", "127.0.0.1", "--port", str(udp), "--udp", "-p", "user.info", "-t", "x",
           f"{m} just info")
    rows = rows_with(srv, m, want=len(cases))
    assert len(rows) == len(cases), rows
    for i, (_, _, prio, tag, level) in enumerate(cases):
        row = rows[i]
        assert row["message"] == f"{m} case{i} something failed"
        assert row["service"] == tag
        assert row["level"] == level
        assert row["host"] == HOSTNAME
        assert f'"facility":"{prio.split(".")[0]}"' in row["context"]
    assert wait_until(lambda: metric(srv, 'opsdb_syslog_messages_total{result="filtered"}') >= 1)
    assert metric(srv, 'opsdb_syslog_messages_total{result="stored"}') == len(cases)


def test_structured_data_and_fingerprint_like_json(server_factory):
    srv, udp, _ = start_syslog_server(server_factory)
    m = unique("sd")
    logger("--server", "127.0.0.1", "--port", str(udp), "--udp", "--rfc5424", "-p", "user.err",
           "-t", "billing", "--msgid", "PAY1", "--sd-id", "order@32473", "--sd-param",
           'id="42"', f"{m} payment 17 failed")
    row = rows_with(srv, m)[0]
    assert '"msgid":"PAY1"' in row["context"]
    assert '"sd":{' in row["context"] and '"order@32473":{"id":"42"}' in row["context"]
    # the same error through the JSON API groups under the same fingerprint
    r = srv.ingest("error_logs", [{"ts": int(time.time() * 1000), "service": "billing",
                                   "host": "h", "level": "error",
                                   "message": f"{m} payment 99 failed"}])
    assert r.status_code in (200, 201, 204), r.text
    fps = srv.query("SELECT DISTINCT fingerprint FROM error_logs "
                    f"WHERE message LIKE '%{m}%'")
    assert len(fps) == 1, fps


RSYSLOG_CONF = """
global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{inport}")
if $programname == 'viatcp' then {{
  action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
  stop
}}
if $programname == 'viaudp' then {{
  action(type="omfwd" target="127.0.0.1" port="{udp}" protocol="udp")
  stop
}}
"""


@pytest.mark.skipif(not shutil.which("rsyslogd") and not shutil.which("/usr/sbin/rsyslogd"),
                    reason="rsyslogd is not installed (Debian package rsyslog)")
def test_rsyslog_forwards_over_tcp_and_udp(server_factory, tmp_path):
    srv, udp, tcp = start_syslog_server(server_factory)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        inport = s.getsockname()[1]
    work = tmp_path / "rsyslog"
    work.mkdir()
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, inport=inport, tcp=tcp, udp=udp))
    log = open(tmp_path / "rsyslogd.log", "w")
    proc = subprocess.Popen(["/usr/sbin/rsyslogd", "-n", "-f", str(conf), "-i",
                             str(tmp_path / "rsyslogd.pid")], stdout=log, stderr=log)
    try:
        m = unique("rs")

        def send_both():
            logger("--server", "127.0.0.1", "--port", str(inport), "--udp", "--rfc3164", "-p",
                   "user.err", "-t", "viatcp", f"{m} over tcp")
            logger("--server", "127.0.0.1", "--port", str(inport), "--udp", "--rfc3164", "-p",
                   "mail.warning", "-t", "viaudp", f"{m} over udp")
            return len(srv.query(f"SELECT 1 FROM error_logs WHERE message LIKE '%{m}%'")) >= 2

        # rsyslogd needs a moment to open its input; messages sent before are lost (UDP)
        assert wait_until(send_both, timeout=20, interval=0.5), (
            (tmp_path / "rsyslogd.log").read_text() + srv.run_stderr())
        assert proc.poll() is None, (tmp_path / "rsyslogd.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    rows = rows_with(srv, m, want=2)
    by_service = {r["service"]: r for r in rows}
    assert set(by_service) == {"viatcp", "viaudp"}, rows
    tcp_row, udp_row = by_service["viatcp"], by_service["viaudp"]
    assert tcp_row["message"] == f"{m} over tcp" and tcp_row["level"] == "error"
    assert udp_row["message"] == f"{m} over udp" and udp_row["level"] == "warning"
    assert tcp_row["host"] == HOSTNAME and udp_row["host"] == HOSTNAME
    assert '"format":"rfc5424"' in tcp_row["context"]
    assert '"format":"rfc3164"' in udp_row["context"]
    assert '"facility":"mail"' in udp_row["context"]


def test_tcp_framing_mixed_split_and_cut(server_factory):
    srv, _, tcp = start_syslog_server(server_factory, "--set", "syslog.max_message_size=1KiB")
    m = unique("fr")
    octet = f"<11>1 - h1 app - - - {m} octet one".encode()
    long_octet = f"<11>1 - h1 app - - - {m} long ".encode() + b"y" * 5000
    send_tcp(tcp,
             b"%d %s" % (len(octet), octet),                  # octet counted
             f"<11>1 - h1 app - - - {m} lf two\n".encode(),   # then newline framing
             f"<11>1 - h1 app - - - {m} nul three\0".encode(),  # NUL as the terminator
             b"%d %s" % (len(long_octet), long_octet[:100]),  # split across packets, too long
             long_octet[100:],
             f"<11>1 - h1 app - - - {m} long line ".encode() + b"z" * 3000 + b"\n",
             f"<11>1 - h1 app - - - {m} split ".encode(),     # a line in two packets
             b"five\n",
             f"<11>1 - h1 app - - - {m} last without newline".encode())
    rows = rows_with(srv, m, want=7)
    msgs = sorted(r["message"] for r in rows)
    assert f"{m} octet one" in msgs
    assert f"{m} lf two" in msgs
    assert f"{m} nul three" in msgs
    assert f"{m} split five" in msgs
    assert f"{m} last without newline" in msgs
    cut = [x for x in msgs if "long" in x]
    assert len(cut) == 2, msgs
    # cut at syslog.max_message_size (1 KiB of message, header included)
    assert all(900 < len(x) <= 1024 for x in cut), [len(x) for x in cut]
    assert metric(srv, "opsdb_syslog_truncated_total") == 2


def test_malformed_and_bad_octet_count(server_factory):
    srv, udp, tcp = start_syslog_server(server_factory)
    m = unique("bad")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for bad in (b"no pri at all", b"<999>1 - - - - - - x", b"<13>1 notatime h a - - - x",
                    b"\xff\xfe\x00garbage"):
            s.sendto(bad, ("127.0.0.1", udp))
        s.sendto(f"<11>1 - - app - - - {m} after bad datagrams".encode(), ("127.0.0.1", udp))
    # a count that is no length: where the next message starts is unknown, the stream is closed
    send_tcp(tcp, b"12345678901 <11>1 - - - - - - x\n")
    send_tcp(tcp, f"<11>1 - - app - - - {m} next connection\n".encode())
    rows = rows_with(srv, m, want=2)
    assert len(rows) == 2
    assert rows[0]["host"] == "127.0.0.1"  # no HOSTNAME: the sender's address
    assert metric(srv, 'opsdb_syslog_messages_total{result="malformed"}') == 4
    assert metric(srv, "opsdb_syslog_framing_errors_total") == 1
    log = srv.run_stderr()
    assert re.search(r"syslog: 127\.0\.0\.1:\d+: malformed message dropped: message does not "
                     r"start with <PRI>", log), log
    assert "is not a length; closing the connection" in log


def test_connection_limit_and_flood(server_factory):
    srv, udp, tcp = start_syslog_server(server_factory, "--set", "syslog.max_connections=4")
    held = [socket.create_connection(("127.0.0.1", tcp), timeout=5) for _ in range(4)]
    try:
        assert wait_until(lambda: metric(srv, "opsdb_syslog_connections_open") == 4)
        extra = socket.create_connection(("127.0.0.1", tcp), timeout=5)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed at once
        extra.close()
        assert wait_until(
            lambda: metric(srv, 'opsdb_syslog_connections_total{result="refused"}') == 1)
        # the held connections still work
        m = unique("cl")
        held[0].sendall(f"<11>1 - h app - - - {m} on a held connection\n".encode())
        assert rows_with(srv, m)
    finally:
        for s in held:
            s.close()
    assert wait_until(lambda: metric(srv, "opsdb_syslog_connections_open") == 0)
    # a flood of malformed datagrams: counted, logged a few times a minute, never fatal
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(2000):
            s.sendto(b"junk %d" % i, ("127.0.0.1", udp))
    assert wait_until(
        lambda: metric(srv, 'opsdb_syslog_messages_total{result="malformed"}') >= 1000)
    assert srv.run_stderr().count("malformed message dropped") <= 11
    assert srv.get("/healthz").status_code == 200


def test_bad_listen_address_is_a_clear_error(server_factory):
    srv = server_factory("--set", "syslog.udp=nonsense", start=False)
    with pytest.raises(Exception) as exc:
        srv.start()
    assert "syslog: listen address 'nonsense' is not host:port" in str(exc.value)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        srv = server_factory("--set", f"syslog.tcp=127.0.0.1:{port}", start=False)
        with pytest.raises(Exception) as exc:
            srv.start()
        assert f"syslog: cannot listen on tcp 127.0.0.1:{port}" in str(exc.value)
