#!/usr/bin/env bash
# Builds the initramfs that turns a stock Debian kernel into an IP-in-IP peer for scripts/interop:
# a static busybox, iproute2's `ip` with its libraries, the virtio and ipip modules (dependencies
# first) and guest-init.sh as /init.
#
# Environment:
#   OUT          where the result goes: $OUT/initramfs.cpio.gz, $OUT/vmlinuz (a link), $OUT/KVER
#   KVER, MODDIR, KERNEL   the kernel to pair it with (modules.dep under MODDIR)
#   KERNEL_PKG   instead of the three above: a Debian kernel package (a meta package such as
#                linux-image-amd64 is followed to its versioned image), fetched with
#                `apt-get download` and unpacked under $OUT/cache, never installed
#   BUSYBOX      a static busybox; default /bin/busybox when it is static, else busybox-static
#                fetched the same way into $OUT/cache (installing it would remove `busybox`)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${OUT:?OUT must name the output directory}"
fail() { echo "build-initramfs: $*" >&2; exit 1; }
mkdir -p "$OUT/cache"

# fetch PACKAGE DIR: unpack a Debian package (not installed) into DIR, once.
fetch() {
    local pkg=$1 dir=$2
    [ -d "$dir" ] && return 0
    (cd "$OUT/cache" && rm -f "${pkg}"_*.deb && apt-get download "$pkg" >/dev/null 2>&1) \
        || fail "apt-get download $pkg failed (apt-get update first?)"
    dpkg-deb -x "$OUT/cache/${pkg}"_*.deb "$dir.tmp" && mv "$dir.tmp" "$dir"
    rm -f "$OUT/cache/${pkg}"_*.deb
}

if [ -n "${KERNEL_PKG:-}" ]; then
    pkg=$KERNEL_PKG
    for _ in 1 2 3; do
        next=$(apt-cache depends "$pkg" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
        [ -n "$next" ] || break
        pkg=$next
    done
    fetch "$pkg" "$OUT/cache/kernel-$pkg"
    KVER=$(ls -1 "$OUT/cache/kernel-$pkg/lib/modules" | head -1)
    [ -n "$KVER" ] || fail "$pkg has no modules"
    MODDIR="$OUT/cache/kernel-$pkg/lib/modules/$KVER"
    KERNEL="$OUT/cache/kernel-$pkg/boot/vmlinuz-$KVER"
    [ -r "$MODDIR/modules.dep" ] || depmod -b "$OUT/cache/kernel-$pkg" "$KVER" || fail "depmod failed"
fi
: "${KVER:?KVER (or KERNEL_PKG) must be set}"
MODDIR=${MODDIR:-/lib/modules/$KVER}
KERNEL=${KERNEL:-/boot/vmlinuz-$KVER}
[ -r "$KERNEL" ] || fail "no kernel image at $KERNEL"
[ -r "$MODDIR/modules.dep" ] || fail "no modules.dep in $MODDIR"

static() { [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1; }
if [ -z "${BUSYBOX:-}" ]; then
    if static /bin/busybox; then
        BUSYBOX=/bin/busybox
    else
        fetch busybox-static "$OUT/cache/busybox-static"
        BUSYBOX="$OUT/cache/busybox-static/bin/busybox"
    fi
fi
static "$BUSYBOX" || fail "$BUSYBOX is not a static executable"

root=$(mktemp -d "$OUT/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,lib/modules,www}
if [ "$(id -u)" -eq 0 ]; then
    # the console the kernel opens for /init before devtmpfs is mounted
    mknod -m 600 "$root/dev/console" c 5 1
    mknod -m 666 "$root/dev/null" c 1 3
fi
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

# iproute2's ip (the checks read `ip -d link` and `ip -s -s link`, which busybox lacks), with the
# libraries and loader it links.
ipbin=$(readlink -f "$(command -v ip)") || fail "iproute2 is not installed"
cp "$ipbin" "$root/sbin/ip"
rm -f "$root/bin/ip"
ln -s /sbin/ip "$root/bin/ip"
ldd "$ipbin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
if [ -e /lib64/ld-linux-x86-64.so.2 ] && [ ! -e "$root/lib64/ld-linux-x86-64.so.2" ]; then
    mkdir -p "$root/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
fi

# Modules, each after the modules it depends on (modules.dep lists paths relative to MODDIR).
declare -A placed=()
order=()
module_path() {
    awk -F: -v a="$1" -v b="${1//_/-}" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko(\..*)?$/, "", n)
        if (n == a || n == b) { print $1; exit } }' "$MODDIR/modules.dep"
}
place() {
    local name=$1 path dep
    [ -n "${placed[$name]:-}" ] && return 0
    placed[$name]=1
    path=$(module_path "$name")
    if [ -z "$path" ]; then
        grep -qE "/(${name}|${name//_/-})\.ko$" "$MODDIR/modules.builtin" 2>/dev/null && return 0
        fail "module $name is neither in $MODDIR nor built in"
    fi
    for dep in $(awk -F: -v p="$path" '$1 == p { print $2; exit }' "$MODDIR/modules.dep"); do
        dep=$(basename "$dep")
        place "${dep%%.ko*}"
    done
    order+=("$path")
}
# virtio_console carries the control shell (/dev/hvc0 in the guest).
for m in virtio_pci virtio_net virtio_console ipip; do place "$m"; done
: > "$root/etc/modules"
for path in "${order[@]}"; do
    file=$(basename "$path")
    case "$file" in
        *.ko.xz) xz -dc "$MODDIR/$path" > "$root/lib/modules/${file%.xz}" ;;
        *.ko.zst) zstd -dqc "$MODDIR/$path" > "$root/lib/modules/${file%.zst}" ;;
        *.ko.gz) gzip -dc "$MODDIR/$path" > "$root/lib/modules/${file%.gz}" ;;
        *.ko) cp "$MODDIR/$path" "$root/lib/modules/$file" ;;
        *) fail "module file $path: unknown compression" ;;
    esac
    echo "${file%%.ko*}.ko" >> "$root/etc/modules"
done

cp "$here/guest-init.sh" "$root/init"
chmod 755 "$root/init"
echo '<html>kernel peer</html>' > "$root/www/index.html"
# 200,000 bytes of 'x' for the HTTP transfers of the checks
head -c 200000 /dev/zero | tr '\0' x > "$root/www/big.txt"

(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet --owner=0:0) | gzip -9 > "$OUT/initramfs.cpio.gz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
ln -sf "$KERNEL" "$OUT/vmlinuz"
echo "$KVER" > "$OUT/KVER"
echo "initramfs for $KVER: $OUT/initramfs.cpio.gz ($(du -h "$OUT/initramfs.cpio.gz" | cut -f1)); modules: $(tr '\n' ' ' < "$root/etc/modules")"
