#!/usr/bin/env bash
# A Calico-shaped cluster in network namespaces, for the live demo and the end-to-end tests.
# Source it; every function uses the prefix $P (default "ipd") for its namespaces.
#
#   ${P}-r   router: lan1 10.0.0.0/24 (bridge, .254), lan2 10.0.1.0/24 (.254), ext 198.51.100.0/24 (.1)
#   ${P}-a   node-a 10.0.0.1/24   workload ${P}-a1 192.168.0.10   (block 192.168.0.0/26)
#   ${P}-b   node-b 10.0.0.2/24   workload ${P}-b1 192.168.1.20   (block 192.168.1.0/26)
#   ${P}-c   node-c 10.0.1.3/24   workload ${P}-c1 192.168.2.30   (block 192.168.2.0/26), behind the router
#   ${P}-x   external server 198.51.100.10/24
#
# Every veth keeps the kernel's default offloads (TSO, checksum offload, GRO as a veth has
# them), as on a host: a veth pair passes TSO super-packets of up to 64 KiB and CHECKSUM_PARTIAL
# packets across, which ipipd takes whole (docs/decisions.md, "Offloads"). TX_CSUM_OFF=1 switches
# transmit checksum offload (and with it TSO) off on every veth instead: every packet then
# crosses with its full checksum and at most the MTU, like on a wire between hosts; the tests
# run in both settings.
#
# The router knows nothing of 192.168.0.0/16: workload traffic between hosts crosses the underlay
# only as IP-in-IP (or natively between the two lan1 hosts when the pool says so), and the
# external server can answer workloads only through SNAT. Workloads are attached as Calico's CNI
# does: a /32 on eth0, a default route via 169.254.1.1, proxy ARP on the host's veth, and a /32
# route to the workload on the host. Traffic stays inside these namespaces.
set -euo pipefail
P=${P:-ipd}
IPIPD=${IPIPD:-}
# 0 (default): every veth keeps its default offloads; 1: transmit checksum offload off on every veth.
TX_CSUM_OFF=${TX_CSUM_OFF:-0}

ns() { ip netns exec "$1" "${@:2}"; }

cluster_down() {
    local n
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${P}-" || true); do
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
}

# link_host NAME ADDR/LEN GATEWAY BRIDGE_OR_PEER
add_host() {
    local name=$1 addr=$2 gw=$3 ifname=$4
    ip netns add "${P}-$name"
    ns "${P}-$name" ip link set lo up
    ns "${P}-$name" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip link add "$ifname" netns "${P}-r" type veth peer name eth0 netns "${P}-$name"
    if [ "$TX_CSUM_OFF" = 1 ]; then
        ns "${P}-$name" ethtool -K eth0 tx off >/dev/null
        ns "${P}-r" ethtool -K "$ifname" tx off >/dev/null
    fi
    ns "${P}-$name" ip addr add "$addr" dev eth0
    ns "${P}-$name" ip link set eth0 up
    ns "${P}-$name" ip route add default via "$gw"
}

# add_workload HOST NAME ADDR
add_workload() {
    local host=$1 name=$2 addr=$3 hns="${P}-$1" wns="${P}-$2"
    ip netns add "$wns"
    ns "$wns" ip link set lo up
    ns "$wns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip link add "cali$name" netns "$hns" type veth peer name eth0 netns "$wns"
    if [ "$TX_CSUM_OFF" = 1 ]; then
        ns "$hns" ethtool -K "cali$name" tx off >/dev/null
        ns "$wns" ethtool -K eth0 tx off >/dev/null
    fi
    ns "$hns" ip link set "cali$name" up
    ns "$hns" sysctl -qw "net.ipv4.conf.cali$name.proxy_arp=1"
    ns "$hns" ip route add "$addr/32" dev "cali$name"
    ns "$wns" ip addr add "$addr/32" dev eth0
    ns "$wns" ip link set eth0 up
    ns "$wns" ip route add 169.254.1.1 dev eth0
    ns "$wns" ip route add default via 169.254.1.1 dev eth0
}

cluster_up() {
    cluster_down
    ip netns add "${P}-r"
    ns "${P}-r" ip link set lo up
    ns "${P}-r" sysctl -qw net.ipv4.ip_forward=1
    ns "${P}-r" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    # A plain router: its bridge hands frames on without running them through iptables. Where
    # br_netfilter is loaded (Docker loads it), every new namespace starts with
    # bridge-nf-call-iptables=1, which costs every bridged frame the netfilter hooks (a quarter
    # of a tunnel daemon's CPU in a profile, since each of its packets crosses this bridge).
    local knob
    for knob in iptables ip6tables arptables; do
        ns "${P}-r" sysctl -qw "net.bridge.bridge-nf-call-$knob=0" 2>/dev/null || true
    done
    ns "${P}-r" ip link add br1 type bridge
    ns "${P}-r" ip addr add 10.0.0.254/24 dev br1
    ns "${P}-r" ip link set br1 up
    add_host a 10.0.0.1/24 10.0.0.254 ra
    add_host b 10.0.0.2/24 10.0.0.254 rb
    add_host c 10.0.1.3/24 10.0.1.254 rc
    add_host x 198.51.100.10/24 198.51.100.1 rx
    ns "${P}-r" ip link set ra master br1
    ns "${P}-r" ip link set rb master br1
    local l
    for l in ra rb rc rx; do ns "${P}-r" ip link set "$l" up; done
    ns "${P}-r" ip addr add 10.0.1.254/24 dev rc
    ns "${P}-r" ip addr add 198.51.100.1/24 dev rx
    add_workload a a1 192.168.0.10
    add_workload b b1 192.168.1.20
    add_workload c c1 192.168.2.30
}

# write_manifests FILE MODE [without|only NAME]: examples/cluster.yaml (the README's three-node
# cluster) with the pool's ipipMode set to MODE, optionally without (or only) the documents of NAME
# (a node's Node and BlockAffinity, or one block): scripts/lib/nettools.py cluster-manifests.
write_manifests() {
    local file=$1 mode=${2:-Always}
    shift 2 || shift $#
    python3 "$(dirname "${BASH_SOURCE[0]}")/nettools.py" cluster-manifests "$mode" "$@" > "$file"
}

# workers_args: "--workers N" when IPIPD_WORKERS is set (every ipipd the tests start gets it).
workers_args() { [ -n "${IPIPD_WORKERS:-}" ] && echo "--workers $IPIPD_WORKERS"; return 0; }

# start_ipipd NODE MANIFESTS LOGDIR [extra args]: runs ipipd in the node's namespace, in the background.
start_ipipd() {
    local node=$1 manifests=$2 logdir=$3
    shift 3
    # The log is emptied here, before the fork: wait_ipipd must not find an earlier run's
    # "running:" in it (and then signal a process that has not yet blocked its signals).
    : > "$logdir/ipipd-$node.log"
    # exec, so that $! is ipipd itself (signals must reach it, not a subshell). Each node its
    # own control socket (IPIPD_SOCKET, which builds without one ignore): the namespaces share
    # one filesystem, and the default /run/ipipd/ipipd.sock would be taken by the first.
    (IPIPD_SOCKET="$logdir/ipipd-$node.sock" exec ip netns exec "${P}-$node" "$IPIPD" run --node "node-$node" --manifests "$manifests" --resync-interval 2 "$@" $(workers_args) \
        > "$logdir/ipipd-$node.log" 2>&1) &
    echo $! > "$logdir/ipipd-$node.pid"
}

# wait_ipipd NODE LOGDIR: until it logs "running:" (or 20 s).
wait_ipipd() {
    local node=$1 logdir=$2 i
    for i in $(seq 1 200); do
        grep -q "running:" "$logdir/ipipd-$node.log" 2>/dev/null && return 0
        kill -0 "$(cat "$logdir/ipipd-$node.pid")" 2>/dev/null || { cat "$logdir/ipipd-$node.log" >&2; return 1; }
        sleep 0.1
    done
    cat "$logdir/ipipd-$node.log" >&2
    return 1
}

# stop_ipipd NODE LOGDIR: SIGTERM and wait.
stop_ipipd() {
    local node=$1 logdir=$2 pid i
    pid=$(cat "$logdir/ipipd-$node.pid" 2>/dev/null) || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    return 1
}
