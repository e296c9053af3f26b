#!/usr/bin/env python3
"""Kernel memory held for stalled subscribers, before and after the server gives them up.

Starts `wirehub serve` on a free loopback port, opens N WebSocket subscribers that complete
the handshake, subscribe to one channel and then never read again, publishes a bounded
volume to that channel over HTTP, and samples every second, for a bounded time, what the
kernel holds: /proc/net/sockstat ("TCP: ... mem", pages, both ends of loopback) and
`ss -tm` for the server's sockets only (their send queues and skmem). Prints one line per
sample and a summary; loopback only, bounded in connections, bytes and time.

    bench/stalled-memory.py --bin target/release/wirehub [-n 1000] [--mib 0.75] [--hold 20]
"""

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def sockstat_tcp_mem_kib():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                mem = int(fields[fields.index("mem") + 1])
                return mem * os.sysconf("SC_PAGE_SIZE") // 1024
    return 0

def server_sockets(port):
    """(count, send-queue bytes, skmem wmem_queued bytes, states) of sockets on the port."""
    out = subprocess.run(["ss", "-tnmH", "state", "all", "sport", "=", f":{port}"],
                         capture_output=True, text=True, check=False).stdout
    count = sendq = queued = 0
    states = {}
    listening = False
    for line in out.splitlines():
        fields = line.split()
        if fields and not line[0].isspace():
            listening = fields[0] == "LISTEN"
            if listening:
                continue
            count += 1
            states[fields[0]] = states.get(fields[0], 0) + 1
            sendq += int(fields[2])
        skmem = re.search(r"skmem:\(([^)]*)\)", line)
        if skmem and not listening:
            # wN: the send queue's memory, skb overhead included (sk_wmem_queued).
            queued += sum(int(w) for w in re.findall(r"(?:^|,)w(\d+)", skmem.group(1)))
    return count, sendq, queued, states

def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        page = r.read().decode()
    out = {}
    for line in page.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            out[name] = int(value)
    return out

def publish(conn, body):
    conn.request("POST", "/api/publish", body, {"content-type": "application/json"})
    reply = conn.getresponse()
    reply.read()
    if reply.status != 200:
        sys.exit(f"publish failed: {reply.status}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/wirehub")
    ap.add_argument("-n", type=int, default=1000, help="stalled subscribers (at most 5000)")
    ap.add_argument("--mib", type=float, default=0.75, help="MiB published to the channel (at most 2)")
    ap.add_argument("--hold", type=int, default=20, help="seconds sampled after publishing (at most 120)")
    ap.add_argument("--heartbeat", default="5s")
    ap.add_argument("serve_args", nargs="*", help="extra arguments for wirehub serve")
    args = ap.parse_args()
    n, mib, hold = min(args.n, 5000), min(args.mib, 2.0), min(args.hold, 120)
    port = free_port()
    server = subprocess.Popen(
        [args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--publish-rate", "0",
         "--heartbeat-interval", args.heartbeat, "--max-queued-bytes", str(64 << 10),
         *args.serve_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients = []
    try:
        for _ in range(100):
            try:
                metrics(port)
                break
            except OSError:
                time.sleep(0.05)
        base = sockstat_tcp_mem_kib()
        subscribe = json.dumps({"type": "subscribe", "channel": "feed"}).encode()
        frame = bytes([0x81, 0x80 | len(subscribe), 0, 0, 0, 0]) + subscribe
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n".encode())
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = s.recv(1)
                if not chunk:
                    sys.exit("server closed during the handshake")
                reply += chunk
            if not reply.startswith(b"HTTP/1.1 101"):
                sys.exit(reply.decode(errors="replace"))
            s.sendall(frame)
            clients.append(s)  # never read again
        while metrics(port).get("wirehub_subscriptions", 0) < n:
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        payload = "x" * 1000
        count = int(mib * (1 << 20) / 1024)
        started = time.monotonic()
        for i in range(count):
            publish(conn, json.dumps({"channel": "feed", "data": {"i": i, "p": payload}}))
        print(f"# {n} stalled subscribers, {count} messages of ~1 KiB published "
              f"({count * 1024 / (1 << 20):.2f} MiB each) in {time.monotonic() - started:.1f} s; "
              f"TCP mem before connecting: {base} KiB")
        print("t_s\tsockstat_tcp_mem_KiB\tserver_sockets\tserver_sendq_KiB\tserver_wmem_queued_KiB"
              "\tstates\tslow\theartbeat\taborted\tconnections")
        peak = 0
        for t in range(hold + 1):
            m = metrics(port)
            mem = sockstat_tcp_mem_kib()
            peak = max(peak, mem)
            count_, sendq, queued, states = server_sockets(port)
            print(f"{t}\t{mem}\t{count_}\t{sendq // 1024}\t{queued // 1024}\t"
                  f"{','.join(f'{k}:{v}' for k, v in sorted(states.items()))}\t"
                  f"{m.get('wirehub_slow_consumers_total', 0)}\t"
                  f"{m.get('wirehub_heartbeat_terminations_total', 0)}\t"
                  f"{m.get('wirehub_connections_aborted_total', '-')}\t"
                  f"{m.get('wirehub_connections', 0)}", flush=True)
            if t < hold:
                time.sleep(1)
        print(f"# peak sockstat TCP mem {peak} KiB ({peak / n:.0f} KiB per stalled connection, "
              f"both ends); at the end {mem} KiB")
    finally:
        for client in clients:
            client.close()
        server.terminate()
        server.wait(timeout=30)

if __name__ == "__main__":
    main()
