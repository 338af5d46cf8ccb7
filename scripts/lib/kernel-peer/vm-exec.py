#!/usr/bin/env python3
"""Runs a shell command in the kernel peer through its control shell and prints what it printed.

    vm-exec.py [--rundir DIR] [--timeout S] COMMAND...

The control shell reads commands on the guest's virtio console, which qemu exposes as the unix
socket DIR/ctl.sock (DIR defaults to $RUNDIR). The exit status is the command's; 255 when the
guest does not answer. Markers are printed by printf from two halves, so the text we send can
never be mistaken for them.
"""
import argparse
import os
import secrets
import socket
import sys
import time


class Channel:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buffer = b""

    def send(self, text):
        self.sock.sendall(text.encode())

    def read_for(self, seconds):
        """Appends what arrives within `seconds` (nothing on a timeout)."""
        self.sock.settimeout(max(0.01, seconds))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        if not chunk:
            raise ConnectionError("the control socket was closed")
        self.buffer += chunk

    def drain(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.read_for(end - time.monotonic())
        self.buffer = b""


def marker():
    token = secrets.token_hex(4)
    return ("KP" + token[:4], token[4:])


def printf_marker(m, extra=""):
    # printf joins the halves: the marker appears in the output, never in the input
    return "printf '%%s%%s%s\\n' %s %s%s" % (" %s" if extra else "", m[0], m[1], " " + extra if extra else "")


def run(command, rundir, timeout):
    ch = Channel(os.path.join(rundir, "ctl.sock"), timeout)
    ch.drain(0.05)  # leftovers of an earlier session
    deadline = time.monotonic() + timeout
    # The shell may still be starting (input sent before it opens the console is lost): ask it
    # to print a marker until it does.
    sync = marker()
    while (sync[0] + sync[1]).encode() not in ch.buffer:
        if time.monotonic() > deadline:
            raise TimeoutError("the guest's control shell does not answer")
        ch.send(printf_marker(sync) + "\n")
        probe_end = time.monotonic() + 0.15
        while (sync[0] + sync[1]).encode() not in ch.buffer and time.monotonic() < probe_end:
            ch.read_for(probe_end - time.monotonic())
    ch.drain(0.05)  # answers to repeated probes
    end = marker()
    ch.send("{ %s\n} </dev/null 2>&1; %s\n" % (command, printf_marker(end, "$?")))
    done = (end[0] + end[1] + " ").encode()
    deadline = time.monotonic() + timeout
    while done not in ch.buffer or not ch.buffer.split(done, 1)[1].endswith(b"\n"):
        if time.monotonic() > deadline:
            raise TimeoutError(ch.buffer.decode(errors="replace"))
        before = len(ch.buffer)
        ch.read_for(0.1)
        if len(ch.buffer) == before:
            # Some guest kernels (Debian's 6.1 under TCG) pass console input on only when more
            # arrives: an empty line, which the shell ignores, keeps it moving.
            ch.send("\n")
    output, rest = ch.buffer.split(done, 1)
    status = int(rest.split()[0])
    text = output.decode(errors="replace").replace("\r", "")
    # a late answer to a repeated probe is not the command's
    text = "".join(line for line in text.splitlines(True) if sync[0] + sync[1] not in line)
    return text, status


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rundir", default=os.environ.get("RUNDIR", ""))
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    if not args.rundir:
        print("vm-exec: --rundir or RUNDIR is required", file=sys.stderr)
        sys.exit(255)
    try:
        text, status = run(" ".join(args.command), args.rundir, args.timeout)
    except (OSError, TimeoutError, ConnectionError) as e:
        print("vm-exec: %s" % e, file=sys.stderr)
        sys.exit(255)
    sys.stdout.write(text)
    sys.exit(status)


if __name__ == "__main__":
    main()
