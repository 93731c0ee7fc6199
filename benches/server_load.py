#!/usr/bin/env python3
"""Loopback load tool for the promptops registry (benches/server-load.sh
drives it). Standard library only; every loop is bounded.

  setup   BASE ADMIN_KEY            -> prints JSON: sdk key, ETags
  publish BASE ADMIN_KEY N THREADS  -> label moves per second, latency
  sse     BASE ADMIN_KEY SDK_KEY N PID -> hold N SSE clients, RSS per client,
                                       publish -> all-clients delivery time
"""
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse


def req(base, key, method, path, body=None, headers=None):
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Authorization": f"Bearer {key}"}
    if body is not None:
        h["Content-Type"] = "application/json"
        body = json.dumps(body)
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None), dict(r.getheaders())


def setup(base, admin):
    out = {}
    for name, prompts, size in (("b1k", 1, 600), ("b100k", 50, 1800)):
        s, v, _ = req(base, admin, "POST", "/v1/projects", {"name": name})
        assert s in (201, 409), v
        for i in range(prompts):
            text = ("Answer politely about {{ topic }}. " * (size // 36 + 1))[:size]
            s, v, _ = req(base, admin, "POST", f"/v1/projects/{name}/prompts",
                          {"name": f"m/p{i:03d}", "type": "text", "template": text, "labels": ["staging"]})
            assert s in (201, 409), v
        s, v, _ = req(base, admin, "POST", "/v1/keys", {"role": "sdk", "project": name, "user": "bench"})
        assert s == 201, v
        out[f"sdk_{name}"] = v["key"]
        s, snap, h = req(base, v["key"], "GET", f"/v1/projects/{name}/snapshot")
        assert s == 200
        out[f"etag_{name}"] = h.get("etag") or h.get("ETag")
        out[f"bytes_{name}"] = len(json.dumps(snap, separators=(",", ":")))
    # A prompt with two versions for label moves.
    req(base, admin, "POST", "/v1/projects/b1k/prompts/m%2Fp000/versions",
        {"type": "text", "template": "second version {{ topic }}"})
    print(json.dumps(out))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def publish(base, admin, n, threads):
    lat = []
    lock = threading.Lock()
    per = n // threads

    def worker(t):
        u = urllib.parse.urlparse(base)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        mine = []
        for i in range(per):
            # Each connection moves its own label between versions 1 and 2:
            # every request is a real change (a new revision, event, audit entry).
            body = json.dumps({"version": 1 + i % 2})
            t0 = time.perf_counter()
            c.request("PUT", f"/v1/projects/b1k/prompts/m%2Fp000/labels/bench{t}", body=body,
                      headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
            r = c.getresponse()
            out = json.loads(r.read())
            assert r.status == 200 and out["changed"], (r.status, out)
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    print(json.dumps({"publishes": len(lat), "seconds": round(dt, 3), "per_second": round(len(lat) / dt, 1),
                      "p50_ms": round(pct(lat, 0.5) * 1000, 2), "p99_ms": round(pct(lat, 0.99) * 1000, 2)}))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sse(base, admin, sdk, n, pid):
    u = urllib.parse.urlparse(base)
    before = rss_kb(pid)
    socks = []
    request = (f"GET /v1/projects/b1k/stream HTTP/1.1\r\nHost: {u.hostname}\r\n"
               f"Authorization: Bearer {sdk}\r\nAccept: text/event-stream\r\n\r\n").encode()
    t0 = time.perf_counter()
    for _ in range(n):
        s = socket.create_connection((u.hostname, u.port), timeout=30)
        s.sendall(request)
        socks.append(s)
    # Read until each client has its snapshot frame.
    bufs = [b""] * n
    for i, s in enumerate(socks):
        # (chunked transfer encoding: look for the end of the frame, not of the buffer)
        while b"event: snapshot" not in bufs[i] or b"\n\n" not in bufs[i][bufs[i].index(b"event: snapshot"):]:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            bufs[i] += chunk
    connect_s = time.perf_counter() - t0
    time.sleep(1.0)
    after = rss_kb(pid)
    # One publish; time until every client has the delta.
    body = {"version": 2}
    s, v, _ = req(base, admin, "GET", "/v1/projects/b1k/prompts/m%2Fp000/labels")
    cur = v["labels"].get("staging", 1)
    body = {"version": 1 if cur == 2 else 2}
    t1 = time.perf_counter()
    s, v, _ = req(base, admin, "PUT", "/v1/projects/b1k/prompts/m%2Fp000/labels/staging", body)
    assert s == 200, v
    got = 0
    for i, sk in enumerate(socks):
        buf = b""
        while b"event: delta" not in buf:
            chunk = sk.recv(65536)
            assert chunk
            buf += chunk
        got += 1
    fanout = time.perf_counter() - t1
    for sk in socks:
        sk.close()
    print(json.dumps({"clients": n, "connect_all_s": round(connect_s, 3), "rss_before_kb": before,
                      "rss_after_kb": after, "kb_per_client": round((after - before) / n, 1),
                      "publish_to_all_clients_ms": round(fanout * 1000, 1), "delivered": got}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "setup":
        setup(sys.argv[2], sys.argv[3])
    elif cmd == "publish":
        publish(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "sse":
        sse(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        sys.exit(f"unknown command {cmd}")
