#!/usr/bin/env python3
"""agent_flood.py PORT SECONDS COUNT STATS-FILE SOURCE...: holds COUNT connections to
127.0.0.1:PORT for SECONDS, from the loopback addresses SOURCE... in turn (as from other pods:
e.g. 127.0.0.2 127.0.0.3): two thirds send half a request and stop, one third send nothing. Whatever the server
closes is opened again (at most 400 a round of 0.2 s), so the pressure lasts. Writes
"opened=N reopened=N answered=N" to STATS-FILE at the end; `answered` counts connections that got
any byte back (a flood connection should never be answered). Not a test by itself: a load for
agent_metrics.sh."""
import resource
import socket
import sys
import time

port, seconds, count, stats = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sources = sys.argv[5:] or ["127.0.0.1"]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < count + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))

HALF = b"GET /metrics HTTP/1.1\r\nHost: agent\r\nUser-Agent: fl"


def dial(i):
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.bind((sources[i % len(sources)], 0))
        s.connect(("127.0.0.1", port))
        if i % 3 != 2:
            s.sendall(HALF)
    except OSError:
        s.close()
        return None
    s.setblocking(False)
    return s


socks = [dial(i) for i in range(count)]
opened = sum(1 for s in socks if s)
reopened = answered = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    budget = 400
    for i, s in enumerate(socks):
        if s is not None:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                answered += 1
            s.close()
        if budget == 0:
            socks[i] = None
            continue
        budget -= 1
        socks[i] = dial(i)
        reopened += 1
    time.sleep(0.2)
for s in socks:
    if s:
        s.close()
with open(stats, "w") as f:
    f.write(f"opened={opened} reopened={reopened} answered={answered}\n")
