#!/usr/bin/env python3
"""Samples, Markdown table and SVG plot of scripts/bench-live (standard library only).

  benchlive.py counters OUT [--pids PID,PID] [--wires NETNS:IF,NETNS:IF]
      write a snapshot (JSON) of the tunnel processes' CPU ticks, the uplinks' packets, the
      machine's busy ticks and the monotonic time, taken before and after each measurement.
  benchlive.py sample OUT PHASE TEST REP [--iperf FILE] [--ping FILE] [--before F --after F]
      append one measurement to OUT (JSON lines); the iperf3 -J output or ping output and the
      two counter snapshots are read here, so OUT stands alone once the run's scratch directory
      is gone.
  benchlive.py report OUT [--plot FILE] [--title TEXT]
      print the Markdown table (medians, min–max over the repetitions, ratios ipipd/kernel and
      ipipd/wireguard-go) and write an SVG of the same figures.

Definitions:
  TCP Mbit/s         iperf3 sum_received (receiver side), all streams.
  UDP delivered kpps bytes received by the iperf3 server / datagram length / receiver seconds.
  ping RTT           median of the run's replies (then the median of the runs).
  tunnel CPU         utime+stime of the tunnel processes on both nodes (/proc/PID/stat, every
                     thread), during the run.
  per GB             tunnel CPU seconds / GB (10^9 bytes) of iperf3 payload received.
  per packet         tunnel CPU / packets on the wire; packets on the wire = (rx+tx packets of the
                     two nodes' uplinks) / 2, i.e. both directions, each packet counted once
                     although both daemons handle it (encapsulate + decapsulate); a super-packet
                     counts as the segments it became.
  machine per GB     busy time of the whole machine (/proc/stat: user, nice, system, irq,
                     softirq, steal; both CPUs) during the run / GB received: every process and
                     the kernel's own work, for the kernel path too.
  cores              tunnel CPU seconds / wall seconds of the run.
  user space         utime share of the tunnel CPU (the rest, stime, is system calls and the
                     kernel work they trigger in the process's context: a packet written into a
                     TUN is forwarded to the workload's veth in the writer's softirq).
"""
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

PHASES = [("kernel", "kernel routing"), ("ipipd", "ipipd (IP-in-IP)"),
          ("ipipd-packet", "ipipd --uplink-io packet"), ("ipipd-raw", "ipipd --uplink-io raw"),
          ("ipipd-ring", "ipipd --uplink-rx ring"), ("ipipd-plain", "ipipd --tun-offloads off"),
          ("ipipd-w2", "ipipd --workers 2"), ("ipipd-spin", "ipipd --spin-us 50"),
          ("ipipd-before", "ipipd before (IPIPD_BEFORE)"),
          ("wireguard-go", "wireguard-go (Debian 12)"), ("wireguard-go-ext", "wireguard-go (WG_GO)")]
COLORS = {"kernel": "#7f7f7f", "ipipd": "#1f77b4", "ipipd-packet": "#6baed6", "ipipd-raw": "#9ecae1",
          "ipipd-ring": "#3182bd", "ipipd-plain": "#c6dbef", "ipipd-before": "#8c6d31", "ipipd-w2": "#2ca02c", "ipipd-spin": "#98df8a", "wireguard-go": "#d62728", "wireguard-go-ext": "#ff7f0e"}
SHORT = {"kernel": "kernel", "ipipd": "ipipd", "ipipd-packet": "packet", "ipipd-raw": "raw", "ipipd-ring": "ring",
         "ipipd-plain": "plain", "ipipd-before": "before", "ipipd-w2": "2 workers", "ipipd-spin": "spin", "wireguard-go": "wg-go", "wireguard-go-ext": "wg-ext"}

# key, label, unit, higher is better, decimals, needs a tunnel
ROWS = [
    ("tcp1_mbps", "TCP, 1 stream", "Mbit/s", True, 0, False),
    ("tcp4_mbps", "TCP, 4 streams", "Mbit/s", True, 0, False),
    ("udp_kpps", "UDP 64 B, delivered", "kpps", True, 0, False),
    ("udp_sent_kpps", "UDP 64 B, offered by the sender", "kpps", None, 0, False),
    ("rtt_ms", "ping RTT, median", "ms", False, 3, False),
    ("tcp1_machine_per_gb", "machine CPU per GB, TCP 1 stream", "CPU s/GB", False, 2, False),
    ("tcp1_cpu_per_gb", "tunnel CPU per GB, TCP 1 stream", "CPU s/GB", False, 2, True),
    ("tcp4_cpu_per_gb", "tunnel CPU per GB, TCP 4 streams", "CPU s/GB", False, 2, True),
    ("tcp1_cpu_per_pkt", "tunnel CPU per wire packet, TCP 1 stream", "µs/packet", False, 2, True),
    ("udp_cpu_per_pkt", "tunnel CPU per wire packet, UDP 64 B", "µs/packet", False, 2, True),
    ("tcp1_cores", "tunnel CPU busy, TCP 1 stream", "cores", False, 2, True),
    ("udp_cores", "tunnel CPU busy, UDP 64 B", "cores", False, 2, True),
    ("tcp1_user_pct", "tunnel CPU in user space, TCP 1 stream", "% of CPU", None, 0, True),
    ("udp_user_pct", "tunnel CPU in user space, UDP 64 B", "% of CPU", None, 0, True),
]


def arg(argv, name, default=None):
    if name in argv:
        i = argv.index(name)
        return argv[i + 1]
    return default


def process_ticks(stat_text):
    """(utime, stime) in clock ticks, all threads, from the text of /proc/PID/stat. The command
    name (field 2) is in parentheses and may hold spaces or parentheses itself, so the fields are
    counted after the last ')': utime and stime are fields 14 and 15 of the line."""
    fields = stat_text[stat_text.rindex(")") + 2:].split()
    return int(fields[11]), int(fields[12])


def machine_busy_ticks(proc_stat_text):
    """Busy clock ticks of the whole machine from /proc/stat's "cpu " line: user, nice, system,
    irq, softirq and steal (idle and iowait left out)."""
    for line in proc_stat_text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            return f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
    raise ValueError("/proc/stat has no 'cpu ' line")


def link_packets(ip_json_text):
    """rx + tx packets of a link from `ip -j -s link show dev IF`."""
    stats = json.loads(ip_json_text)[0]["stats64"]
    return stats["rx"]["packets"] + stats["tx"]["packets"]


def read_counters(pids, wires):
    """What one measurement brackets: the tunnel processes' CPU ticks, the uplinks' packets, the
    machine's busy ticks and the monotonic time (taken first). `wires` are NETNS:IFNAME."""
    now = time.monotonic()
    user = system = 0
    for pid in pids:
        try:
            with open("/proc/%s/stat" % pid) as f:
                u, s = process_ticks(f.read())
        except FileNotFoundError:
            raise SystemExit("bench-live: tunnel process %s is gone" % pid)
        user += u
        system += s
    wire = 0
    for spec in wires:
        netns, ifname = spec.split(":", 1)
        out = subprocess.run(["ip", "-n", netns, "-j", "-s", "link", "show", "dev", ifname],
                             check=True, capture_output=True, text=True).stdout
        wire += link_packets(out)
    with open("/proc/stat") as f:
        machine = machine_busy_ticks(f.read())
    return {"user": user, "system": system, "wire": wire, "machine": machine, "time": now}


def counters(argv):
    """counters OUT [--pids P,P] [--wires NS:IF,NS:IF]: a snapshot of read_counters as JSON."""
    pids = [p for p in (arg(argv, "--pids") or "").split(",") if p]
    wires = [w for w in (arg(argv, "--wires") or "").split(",") if w]
    with open(argv[0], "w") as f:
        json.dump(read_counters(pids, wires), f)


def deltas(before, after, clock_ticks):
    """The sample fields two counter snapshots give."""
    return {
        "cpu_s": (after["user"] + after["system"] - before["user"] - before["system"]) / clock_ticks,
        "cpu_user_s": (after["user"] - before["user"]) / clock_ticks,
        "wire_packets": after["wire"] - before["wire"],
        "machine_s": (after["machine"] - before["machine"]) / clock_ticks,
        "wall_s": after["time"] - before["time"],
    }


def sample(argv):
    out, phase, test, rep = argv[0], argv[1], argv[2], int(argv[3])
    rec = {"phase": phase, "test": test, "rep": rep}
    if arg(argv, "--before"):
        with open(arg(argv, "--before")) as b, open(arg(argv, "--after")) as a:
            rec.update(deltas(json.load(b), json.load(a), os.sysconf("SC_CLK_TCK")))
    if arg(argv, "--iperf"):
        d = json.load(open(arg(argv, "--iperf")))
        if "error" in d:
            raise SystemExit(f"iperf3: {d['error']}")
        r = d["end"]["sum_received"]
        rec["bytes"] = r["bytes"]
        rec["seconds"] = r["seconds"]
        rec["bps"] = r["bits_per_second"]
        if test == "udp":
            length = d["start"]["test_start"]["blksize"]
            s = d["end"]["sum_sent"] if "sum_sent" in d["end"] else d["end"]["sum"]
            rec["datagram"] = length
            rec["sent_packets"] = s.get("packets", s["bytes"] // length)
            rec["sent_seconds"] = s["seconds"]
            rec["delivered_packets"] = r["bytes"] // length
    if arg(argv, "--ping"):
        text = open(arg(argv, "--ping")).read()
        rec["rtts_ms"] = [float(x) for x in re.findall(r"time=([0-9.]+) ms", text)]
        if not rec["rtts_ms"]:
            raise SystemExit("ping: no replies")
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")


def metrics(rec):
    """The per-run values of ROWS that this sample gives."""
    t = rec["test"]
    m = {}
    if t == "ping":
        m["rtt_ms"] = statistics.median(rec["rtts_ms"])
        return m
    if t in ("tcp1", "tcp4"):
        m[f"{t}_mbps"] = rec["bps"] / 1e6
    if t == "udp":
        m["udp_kpps"] = rec["delivered_packets"] / rec["seconds"] / 1e3
        m["udp_sent_kpps"] = rec["sent_packets"] / rec["sent_seconds"] / 1e3
    if "machine_s" in rec and rec.get("bytes") and t in ("tcp1", "tcp4"):
        m[f"{t}_machine_per_gb"] = rec["machine_s"] / (rec["bytes"] / 1e9)
    if "cpu_s" in rec and rec["phase"] != "kernel":
        if rec.get("bytes"):
            m[f"{t}_cpu_per_gb"] = rec["cpu_s"] / (rec["bytes"] / 1e9)
        carried = rec.get("wire_packets", 0) / 2
        if carried > 0:
            m[f"{t}_cpu_per_pkt"] = rec["cpu_s"] / carried * 1e6
        if rec.get("wall_s"):
            m[f"{t}_cores"] = rec["cpu_s"] / rec["wall_s"]
        if "cpu_user_s" in rec and rec["cpu_s"] > 0:
            m[f"{t}_user_pct"] = rec["cpu_user_s"] / rec["cpu_s"] * 100
    return m


def collect(path):
    values = {}  # (phase, key) -> [values]
    for line in open(path):
        if not line.strip():
            continue
        rec = json.loads(line)
        for k, v in metrics(rec).items():
            values.setdefault((rec["phase"], k), []).append(v)
    return values


def fmt(v, decimals):
    if v is None:
        return "—"
    if decimals == 0:
        return f"{v:,.0f}"
    return f"{v:,.{decimals}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def report(argv):
    path = argv[0]
    plot = arg(argv, "--plot")
    title = arg(argv, "--title", "bench-live")
    values = collect(path)
    ext = arg(argv, "--ext-label")
    known = [(p, ext if (p == "wireguard-go-ext" and ext) else l) for p, l in PHASES]
    phases = [p for p in known if any(ph == p[0] for ph, _ in values)]
    rows = [r for r in ROWS if any((p[0], r[0]) in values for p in phases)]
    stats = {}
    for key, *_ in rows:
        for p, _ in phases:
            vs = values.get((p, key))
            if vs:
                stats[(p, key)] = (statistics.median(vs), min(vs), max(vs), len(vs))
    med = lambda p, k: stats[(p, k)][0] if (p, k) in stats else None
    head = "| metric | unit | " + " | ".join(f"{label} median (min–max)" for _, label in phases)
    have = {p for p, _ in phases}
    ratios = [("ipipd", "kernel", "ipipd / kernel"), ("ipipd", "ipipd-before", "ipipd / before"),
              ("ipipd-w2", "ipipd", "--workers 2 / 1"), ("ipipd-spin", "ipipd", "--spin-us 50 / 0"),
              ("ipipd", "wireguard-go", "ipipd / wireguard-go (Debian)"),
              ("ipipd", "wireguard-go-ext", "ipipd / wireguard-go (WG_GO)")]
    ratios = [r for r in ratios if r[0] in have and r[1] in have]
    head += "".join(f" | {r[2]}" for r in ratios) + " |"
    print(head)
    print("| --- | --- |" + " ---: |" * (len(phases) + len(ratios)))
    for key, label, unit, higher, dec, tunnel in rows:
        arrow = {True: " ↑", False: " ↓", None: ""}[higher]
        cells = []
        for p, _ in phases:
            if (p, key) in stats:
                m, lo, hi, n = stats[(p, key)]
                cells.append(f"{fmt(m, dec)} ({fmt(lo, dec)}–{fmt(hi, dec)})")
            else:
                cells.append("—")
        line = f"| {label}{arrow} | {unit} | " + " | ".join(cells)
        for a, b, _ in ratios:
            line += " | " + ratio(med(a, key), med(b, key))
        print(line + " |")
    print()
    print("↑ higher is better, ↓ lower is better, no arrow: context; median over the runs, (min–max) their spread; "
          "tunnel CPU counts both nodes' tunnel processes (the kernel path has none: its work is "
          "softirq time, not attributed here).")
    if plot:
        write_svg(plot, title, phases, rows, stats)
        print(f"\nplot: {plot}")


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_svg(path, title, phases, rows, stats):
    cols = 4
    pw, ph = max(240, 40 + 56 * len(phases)), 190  # panel size
    top, left = 56, 10
    nrows = math.ceil(len(rows) / cols)
    width = left * 2 + cols * pw
    height = top + nrows * ph + 10
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{left}" y="20" font-size="14" font-weight="bold">{esc(title)}</text>']
    lx = left
    for p, label in phases:
        o.append(f'<rect x="{lx}" y="30" width="12" height="12" fill="{COLORS[p]}"/>')
        o.append(f'<text x="{lx + 16}" y="40">{esc(label)}</text>')
        lx += 16 + 7 * len(label) + 20
    o.append(f'<text x="{lx}" y="40" fill="#555">bars: median; whiskers: min–max over the runs</text>')
    for i, (key, label, unit, higher, dec, _) in enumerate(rows):
        x0 = left + (i % cols) * pw
        y0 = top + (i // cols) * ph
        o.append(f'<text x="{x0 + 8}" y="{y0 + 12}" font-weight="bold" font-size="10.5">{esc(label)}</text>')
        o.append(f'<text x="{x0 + 8}" y="{y0 + 25}" fill="#555">{esc(unit)}, '
                 f'{ {True: "higher is better", False: "lower is better", None: "context"}[higher] }</text>')
        vmax = max((stats[(p, key)][2] for p, _ in phases if (p, key) in stats), default=0) or 1
        base = y0 + ph - 28
        plot_h = ph - 28 - 48
        bw = 44
        gap = (pw - 16 - len(phases) * bw) / (len(phases) + 1)
        o.append(f'<line x1="{x0 + 8}" y1="{base}" x2="{x0 + pw - 8}" y2="{base}" stroke="#333"/>')
        for j, (p, plabel) in enumerate(phases):
            bx = x0 + 8 + gap + j * (bw + gap)
            short = SHORT.get(p, p)
            o.append(f'<text x="{bx + bw / 2}" y="{base + 14}" text-anchor="middle">{short}</text>')
            if (p, key) not in stats:
                o.append(f'<text x="{bx + bw / 2}" y="{base - 4}" text-anchor="middle" fill="#999">n/a</text>')
                continue
            m, lo, hi, _ = stats[(p, key)]
            h = m / vmax * plot_h
            o.append(f'<rect x="{bx:.1f}" y="{base - h:.1f}" width="{bw}" height="{h:.1f}" fill="{COLORS[p]}"/>')
            ylo, yhi = base - lo / vmax * plot_h, base - hi / vmax * plot_h
            cx = bx + bw / 2
            o.append(f'<line x1="{cx:.1f}" y1="{ylo:.1f}" x2="{cx:.1f}" y2="{yhi:.1f}" stroke="black"/>')
            for yy in (ylo, yhi):
                o.append(f'<line x1="{cx - 5:.1f}" y1="{yy:.1f}" x2="{cx + 5:.1f}" y2="{yy:.1f}" stroke="black"/>')
            o.append(f'<text x="{cx:.1f}" y="{yhi - 4:.1f}" text-anchor="middle">{fmt(m, dec)}</text>')
    o.append("</svg>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("counters", "sample", "report"):
        sys.exit(__doc__)
    {"counters": counters, "sample": sample, "report": report}[sys.argv[1]](sys.argv[2:])
