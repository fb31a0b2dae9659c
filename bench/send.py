#!/usr/bin/python3
"""Posts files to one URL with N parallel senders, each on one kept-alive HTTP connection, as a
real ingestion client (Telegraf, a log shipper) does. Prints "<http code> <seconds> <file>" per
file; the answer body goes to <file>.resp. A process per request (curl from xargs) would cost more
CPU than the server on this 2-core machine and measure the client instead.

usage: send.py URL CONTENT_TYPE SENDERS FILE...
"""
import http.client
import sys
import threading
import time
import urllib.parse


def main():
    url, ctype, senders, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    u = urllib.parse.urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    lock = threading.Lock()
    queue = list(reversed(files))
    lines = []

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        while True:
            with lock:
                if not queue:
                    return
                f = queue.pop()
            with open(f, "rb") as fh:
                body = fh.read()
            t0 = time.monotonic()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": ctype})
                r = conn.getresponse()
                answer, code = r.read(), r.status
            except (OSError, http.client.HTTPException) as exc:
                answer, code = str(exc).encode(), 0
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
            seconds = time.monotonic() - t0
            with open(f + ".resp", "wb") as fh:
                fh.write(answer)
            with lock:
                lines.append(f"{code:03d} {seconds:.6f} {f}")

    threads = [threading.Thread(target=worker) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
