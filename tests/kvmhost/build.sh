#!/usr/bin/env bash
# Prepares the nested test host: Debian's cloud kernel and the KVM modules it needs, so that a
# machine without /dev/kvm can still run the e2e suite on a real KVM (AMD-V emulated by QEMU TCG,
# see docs/KVM-HOSTS.md). Output: build/kvmhost/{vmlinuz,irqbypass.ko,kvm.ko,kvm-amd.ko,VERSION} and the
# networking modules the agent and network tests need (tun, veth, bridge, vxlan and what they load).
# Idempotent: does nothing when the output matches the newest kernel package already fetched.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
out="$top/build/kvmhost"
cache="${KVMHOST_CACHE:-/var/cache/kvmstack/kvmhost}"
mkdir -p "$out" "$cache"

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

pkg=$(apt-cache search --names-only '^linux-image-6\.12\..*-cloud-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -n 1)
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(apt-cache search --names-only '^linux-image-6\.12\..*-cloud-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -n 1)
fi
[ -n "$pkg" ] || { echo "kvmhost: no linux-image-6.12.*-cloud-amd64-unsigned package in apt" >&2; exit 1; }
if [ -f "$out/VERSION" ] && [ "$(cat "$out/VERSION")" = "$pkg" ] && [ -f "$out/kvm-amd.ko" ] && [ -f "$out/vxlan.ko" ]; then
  exit 0
fi
deb=$(ls "$cache"/"$pkg"_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
  (cd "$cache" && apt-get download "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb=$(ls "$cache"/"$pkg"_*.deb | head -n 1)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
mods=$(ls -d "$tmp"/lib/modules/*)
cp "$tmp"/boot/vmlinuz-* "$out/vmlinuz"
xz -dc "$mods/kernel/virt/lib/irqbypass.ko.xz" >"$out/irqbypass.ko"
xz -dc "$mods/kernel/arch/x86/kvm/kvm.ko.xz" >"$out/kvm.ko"
xz -dc "$mods/kernel/arch/x86/kvm/kvm-amd.ko.xz" >"$out/kvm-amd.ko"
# In load order (each after what it depends on); the test host's /init loads them in this order.
for m in drivers/net/tun net/llc/llc net/802/stp net/bridge/bridge drivers/net/veth \
  net/ipv4/udp_tunnel net/ipv6/ip6_udp_tunnel drivers/net/vxlan/vxlan; do
  xz -dc "$mods/kernel/$m.ko.xz" >"$out/$(basename "$m").ko"
done
echo "$pkg" >"$out/VERSION"
echo "kvmhost: $pkg ready in $out"
