#!/usr/bin/env bash
# libvirtd and virtlogd do not start by themselves on these machines.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  virsh -c qemu:///system version >/dev/null 2>&1 || {
    echo "libvirtd is not reachable and only root can start it here (libvirtd -d; virtlogd -d)" >&2
    exit 1; }
  exit 0
fi
# Debian's udev rule makes /dev/kvm root:kvm 0660; without udev it stays 0600
# and libvirt, which runs QEMU as libvirt-qemu (group kvm), finds KVM "not
# available now" after probing QEMU with it, so it re-probes QEMU (4-8 s) on
# every call that needs capabilities: each define, start and heartbeat. Whether
# guests run under KVM or TCG is still decided by Ferry's probe boot.
if [ -c /dev/kvm ] && getent group kvm >/dev/null \
    && [ "$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "libvirtd did not answer on qemu:///system" >&2
exit 1
