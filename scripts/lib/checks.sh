#!/usr/bin/env bash
# What the live test scripts (scripts/e2e, scripts/endurance) share: the check runner and the
# helpers around the namespace cluster of scripts/lib/cluster.sh. Source it after cluster.sh,
# with WORK (the log directory), PY and TOOLS (scripts/lib/nettools.py) set, and the counters
# `passed` and `failed` at 0.
#   CHECK_TAIL   lines of a passing check's output shown under its PASS line (default 4)

# check NAME CMD...: runs CMD with its output in $WORK/check.out; PASS with the last lines it
# printed (what it measured), or FAIL with the end of its output.
check() {
    local name=$1
    shift
    if "$@" >"$WORK/check.out" 2>&1; then
        echo "PASS $name"
        grep -v '^PING\|^---\|^rtt\|^[0-9]* packets\|bytes from\|^$' "$WORK/check.out" | tail -"${CHECK_TAIL:-4}" | sed 's/^/    /' || true
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        sed 's/^/    /' "$WORK/check.out" | tail -30
        failed=$((failed + 1))
    fi
}

# metric NODE NAME [LABELS]: one Prometheus sample of the node's ipipd (127.0.0.1:9091 in its namespace).
metric() { ns "${P}-$1" "$PY" "$TOOLS" metric "http://127.0.0.1:9091/metrics" "$2" "${3:-}"; }

ping_ok() { ns "${P}-$1" ping -c 3 -i 0.2 -W 2 "$2"; }

# sleep_until T0 OFFSET: sleep until OFFSET seconds after the epoch time T0 (date +%s.%N).
sleep_until() { "$PY" "$TOOLS" sleep-until "$1" "$2"; }

# wait_pid PID SECS: wait for a background job, killing it after SECS; returns its status.
wait_pid() {
    local i
    for i in $(seq 1 $(($2 * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill "$1" 2>/dev/null
    wait "$1"
}

# start_etcd NAME: etcd-server in the router namespace on ETCD_URL (its lan1 address), data in
# $WORK/etcd, pid in $WORK/etcd.pid; returns once IPIPCTL can list pools through it (or fails
# after 10 s with the end of its log).
start_etcd() {
    local name=$1 i
    (exec ip netns exec "${P}-r" etcd --name "$name" --data-dir "$WORK/etcd" \
        --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster "$name=http://127.0.0.1:2380" --log-outputs "$WORK/etcd.log" --logger zap) >/dev/null 2>&1 &
    echo $! > "$WORK/etcd.pid"
    for i in $(seq 1 100); do
        ns "${P}-r" "$IPIPCTL" get ippools --datastore "etcd:$ETCD_URL" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -5 "$WORK/etcd.log"
    return 1
}
