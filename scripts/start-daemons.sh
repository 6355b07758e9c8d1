#!/usr/bin/env bash
# libvirtd and virtlogd do not start by themselves on these machines.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  virsh -c qemu:///system version >/dev/null 2>&1 || {
    echo "libvirtd is not reachable and only root can start it here (libvirtd -d; virtlogd -d)" >&2
    exit 1; }
  exit 0
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "libvirtd did not answer on qemu:///system" >&2
exit 1
