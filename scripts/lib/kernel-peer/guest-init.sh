#!/bin/sh
# /init of the kernel peer (PID 1 in the VM, busybox sh). Configured from the kernel command line:
#   kp.addr=172.29.0.2/24   the underlay address on eth0
#   kp.remote=172.29.0.1    the node on the other side (ipip1's remote, the routes' next hop)
#   kp.mode=tunl0           tunl0: the fallback device only, as Calico uses it (any outer source);
#                           ipip1: a point-to-point `type ipip local … remote …` device; none
#   kp.inner=10.99.2.1/32   the tunnel address
#   kp.route=10.99.1.0/26   prefixes routed into the tunnel, comma separated
# Then it serves HTTP on :80 (/www) and a TCP echo on :7 on every address, runs a control shell on
# the virtio console /dev/hvc0 (vm-exec.py talks to it) and prints KPEER-READY on the console.
PATH=/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
exec 0</dev/console 1>/dev/console 2>&1

addr=172.29.0.2/24 remote=172.29.0.1 mode=tunl0 inner=10.99.2.1/32 routes=10.99.1.0/26
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        kp.addr=*) addr=${arg#*=} ;;
        kp.remote=*) remote=${arg#*=} ;;
        kp.mode=*) mode=${arg#*=} ;;
        kp.inner=*) inner=${arg#*=} ;;
        kp.route=*) routes=${arg#*=} ;;
    esac
done
say() { echo "kernel-peer: $*" > /dev/console; }

for m in $(cat /etc/modules); do
    opts=
    # log_ecn_error: the kernel logs the ECN cases RFC 6040 drops (the checks read them)
    [ "$m" = ipip.ko ] && opts=log_ecn_error=1
    insmod "/lib/modules/$m" $opts || say "insmod $m failed"
done

sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
/sbin/ip link set lo up
n=0
while ! /sbin/ip link show eth0 >/dev/null 2>&1 && [ $n -lt 100 ]; do usleep 20000; n=$((n + 1)); done
/sbin/ip addr add "$addr" dev eth0
/sbin/ip link set eth0 up

case "$mode" in
    ipip1) dev=ipip1; /sbin/ip link add ipip1 type ipip local "${addr%/*}" remote "$remote" || say "ipip1: not created" ;;
    tunl0) dev=tunl0 ;;
    *) dev= ;;
esac
if [ -n "$dev" ]; then
    /sbin/ip addr add "$inner" dev "$dev"
    /sbin/ip link set "$dev" up
    sysctl -qw "net.ipv4.conf.$dev.rp_filter=0"
    for r in $(echo "$routes" | tr ',' ' '); do
        if [ "$dev" = tunl0 ]; then
            /sbin/ip route add "$r" via "$remote" dev tunl0 onlink
        else
            /sbin/ip route add "$r" dev ipip1
        fi
    done
fi

n=0
while [ ! -e /dev/hvc0 ] && [ $n -lt 150 ]; do usleep 20000; n=$((n + 1)); done
cat > /bin/control-shell <<'SH'
#!/bin/sh
# The control shell on /dev/hvc0: no echo, no CR; its first start finishes the boot.
stty -echo -onlcr 2>/dev/null
if [ ! -e /run/ready ]; then
    : > /run/ready
    echo "KPEER-READY kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
fi
# busybox sh runs its own `ip` applet before PATH: iproute2's is wanted
{ echo 'ip() { /sbin/ip "$@"; }'; cat; } | sh 2>&1
SH
chmod 755 /bin/control-shell
cat > /etc/inittab <<'TAB'
::respawn:/bin/httpd -f -p 80 -h /www
::respawn:/bin/nc -ll -p 7 -e /bin/cat
TAB
if [ -e /dev/hvc0 ]; then
    echo 'hvc0::respawn:/bin/control-shell' >> /etc/inittab
else
    say "no /dev/hvc0: no control shell"
    echo "KPEER-READY kernel=$(uname -r) control=none" > /dev/console
fi
say "eth0 $addr, mode $mode, tunnel address $inner, routes $routes"
exec /bin/init
