#!/usr/bin/env bash
# Starts or stops the kernel peer: qemu booting $BUILD/vmlinuz with $BUILD/initramfs.cpio.gz,
# its NIC on the tap $TAP of the namespace $NETNS, its control shell on a unix socket
# ($RUNDIR/ctl.sock, see vm-exec.py).
#
#   vm.sh start   boots it and waits until the guest prints KPEER-READY (exit 1 with the logs'
#                 tails otherwise); KVM when /dev/kvm is usable and the guest boots under it,
#                 else TCG
#   vm.sh stop    stops the qemu recorded in $RUNDIR (only if it still is ours)
#
# Environment: NETNS, TAP, RUNDIR, BUILD (required); TIMEOUT [120] seconds to wait;
# GUEST_MAC [52:54:00:29:00:02] (options may follow, e.g. ",csum=off"); MEM [256] MiB;
# KP_ADDR, KP_REMOTE, KP_MODE, KP_INNER, KP_ROUTE: the guest's kp.* settings (guest-init.sh).
set -euo pipefail
: "${NETNS:?}" "${TAP:?}" "${RUNDIR:?}"
fail() { echo "vm: $*" >&2; exit 1; }

stop() {
    local pid
    pid=$(cat "$RUNDIR/vm.pid" 2>/dev/null) || return 0
    # the pid is ours only while its command line names our control socket
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$RUNDIR/ctl.sock"; then
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUNDIR/vm.pid" "$RUNDIR/ctl.sock"
}

# boot ACCEL SECONDS: 0 when the guest is ready, else 1 with qemu stopped and the reason in $why.
boot() {
    local accel=$1 limit=$2 cpu=max start append pid
    [ "$accel" = kvm ] && cpu=host
    append="console=ttyS0 quiet panic=-1"
    local kv
    for kv in addr:${KP_ADDR:-} remote:${KP_REMOTE:-} mode:${KP_MODE:-} inner:${KP_INNER:-} route:${KP_ROUTE:-}; do
        [ -n "${kv#*:}" ] && append="$append kp.${kv%%:*}=${kv#*:}"
    done
    rm -f "$RUNDIR"/{console.log,qemu.log,vm.pid,ctl.sock}
    start=$(date +%s%N)
    # setsid in a subshell: qemu is no job of this script, and outlives it
    (setsid ip netns exec "$NETNS" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -m "${MEM:-256}" -smp 1 \
        -nodefaults -no-user-config -display none -monitor none -no-reboot \
        -kernel "$BUILD/vmlinuz" -initrd "$BUILD/initramfs.cpio.gz" -append "$append" \
        -chardev "file,id=con,path=$RUNDIR/console.log" -serial chardev:con \
        -device virtio-serial-pci,id=vser0 \
        -chardev "socket,id=ctl,path=$RUNDIR/ctl.sock,server=on,wait=off" \
        -device virtconsole,chardev=ctl,bus=vser0.0 \
        -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
        -device "virtio-net-pci,netdev=n0,mac=${GUEST_MAC:-52:54:00:29:00:02},romfile=" \
        </dev/null >"$RUNDIR/qemu.log" 2>&1 & echo $! > "$RUNDIR/vm.pid")
    pid=$(cat "$RUNDIR/vm.pid")
    while :; do
        if grep -q KPEER-READY "$RUNDIR/console.log" 2>/dev/null; then
            echo "vm: ready in $(( ($(date +%s%N) - start) / 1000000 )) ms ($accel): $(grep -m1 KPEER-READY "$RUNDIR/console.log")"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then why="qemu ($accel) exited before the guest was ready"; break; fi
        if [ $(( ($(date +%s%N) - start) / 1000000000 )) -ge "$limit" ]; then why="no KPEER-READY within $limit s ($accel)"; break; fi
        sleep 0.1
    done
    stop
    return 1
}

case "${1:-}" in
    start)
        : "${BUILD:?}"
        [ -r "$BUILD/vmlinuz" ] && [ -r "$BUILD/initramfs.cpio.gz" ] || fail "no kernel or initramfs in $BUILD (build-initramfs.sh)"
        ip -n "$NETNS" -d link show "$TAP" 2>/dev/null | grep -q 'tun type tap' || fail "no tap $TAP in namespace $NETNS"
        mkdir -p "$RUNDIR"
        ip -n "$NETNS" link set "$TAP" up
        why=
        # /dev/kvm alone is not enough: without vmx or svm it cannot run a stock kernel
        if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
            boot kvm 20 && exit 0
            echo "vm: $why; trying TCG" >&2
        fi
        boot tcg "${TIMEOUT:-120}" && exit 0
        echo "vm: $why" >&2
        echo "--- qemu.log" >&2; tail -5 "$RUNDIR/qemu.log" >&2 || true
        echo "--- console.log" >&2; tail -20 "$RUNDIR/console.log" >&2 || true
        exit 1 ;;
    stop) stop ;;
    *) fail "usage: vm.sh start|stop" ;;
esac
