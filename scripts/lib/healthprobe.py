#!/usr/bin/env python3
"""Probes of ipipd's health endpoints for scripts/e2e-health (standard library only).

  healthprobe.py get URL              print the status code, then the body; exit 0 on any answer,
                                      1 when nothing answers
  healthprobe.py poll URL SECONDS OUT poll URL every 5 ms for up to SECONDS (or until it answered
                                      200 for a whole second), write the sequence of outcomes to
                                      OUT as "STATE first_time count" lines (STATE: refused or the
                                      status code) and the body of the first 503 after them
  healthprobe.py start-ok OUT         read what poll wrote; exit 0 when the sequence is
                                      refused* 503+ 200+ (not ready until programmed, then ready
                                      and never not ready again); print it
  healthprobe.py wait URL STATUS SECS poll every 0.1 s until URL answers STATUS; print the
                                      seconds it took and the body; exit 1 after SECS
"""
import http.client
import sys
import time
import urllib.parse


def probe(url, timeout=2.0):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", u.path or "/")
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    except OSError:
        return None, ""
    finally:
        conn.close()


def poll(url, seconds, out):
    runs = []  # [state, first time, count]
    first503 = None
    t0 = time.monotonic()
    ok_since = None
    while time.monotonic() - t0 < seconds:
        status, body = probe(url, timeout=0.5)
        state = "refused" if status is None else str(status)
        now = time.monotonic() - t0
        if runs and runs[-1][0] == state:
            runs[-1][2] += 1
        else:
            runs.append([state, now, 1])
        if status == 503 and first503 is None:
            first503 = body
        if status == 200:
            ok_since = now if ok_since is None else ok_since
            if now - ok_since >= 1.0:
                break
        else:
            ok_since = None
        time.sleep(0.005)
    with open(out, "w") as f:
        for state, first, count in runs:
            f.write("%s %.3f %d\n" % (state, first, count))
        if first503 is not None:
            f.write("--- first 503 body\n" + first503)


def start_ok(path):
    with open(path) as f:
        text = f.read()
    head, _, body = text.partition("--- first 503 body\n")
    runs = [line.split()[0] for line in head.splitlines() if line]
    print(head.strip().replace("\n", "; "))
    if body:
        print("first 503 body: " + " | ".join(l.strip() for l in body.splitlines() if l.strip()))
    seq = list(runs)
    while seq and seq[0] == "refused":
        seq.pop(0)
    if seq != ["503", "200"]:
        print("expected refused* 503+ 200+, got: %s" % " ".join(runs))
        return 1
    return 0


def wait(url, status, seconds):
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        got, body = probe(url)
        if got == status:
            print("%s answered %d after %.1f s" % (url, status, time.monotonic() - t0))
            print(body, end="")
            return 0
        time.sleep(0.1)
    got, body = probe(url)
    print("%s still answers %s after %.0f s:" % (url, got, seconds))
    print(body, end="")
    return 1


def main(argv):
    if len(argv) == 3 and argv[1] == "get":
        status, body = probe(argv[2])
        if status is None:
            print("nothing answers at %s" % argv[2])
            return 1
        print(status)
        print(body, end="")
        return 0
    if len(argv) == 5 and argv[1] == "poll":
        poll(argv[2], float(argv[3]), argv[4])
        return 0
    if len(argv) == 3 and argv[1] == "start-ok":
        return start_ok(argv[2])
    if len(argv) == 5 and argv[1] == "wait":
        return wait(argv[2], int(argv[3]), float(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
