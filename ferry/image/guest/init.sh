#!/bin/sh
# /init of the ferry test guest (PID 1 in the initramfs, busybox ash).
#
# Finds the ferry data partition (see dataarea.py for its layout), checks the
# payload hash, increments the boot counter on disk, prints ONE line
#     GUEST-BOOTED id=<id> boot=<n> payload=ok|BAD
# on the serial port, then waits for the ACPI power button and powers off.
# Problems are reported as "GUEST-ERROR <reason>" lines; the guest still
# waits for the power button so the host can shut it down normally.
#
# To extend: keep the single GUEST-BOOTED line format in sync with marker.py;
# new header fields must also be written by dataarea.build_data_area.

/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

MAGIC="FERRY-GUEST-DATA 1"

# With console=ttyS0 /dev/console is the same port, so write once, to ttyS0
# when it exists; a second write to /dev/console would duplicate the marker.
say() {
    if [ -c /dev/ttyS0 ]; then
        echo "$*" > /dev/ttyS0
    else
        echo "$*" > /dev/console
    fi
}

load_group() {
    [ -f "/etc/ferry/$1.modules" ] || return 0
    while read -r mod; do
        [ -n "$mod" ] && insmod "/lib/modules/$mod.ko" 2>/dev/null
    done < "/etc/ferry/$1.modules"
    return 0
}

# The data partition is recognised by its header, not by name, so the same
# image works as vda (virtio-blk) or sda (virtio-scsi, IDE).
find_data() {
    for part in /sys/class/block/*; do
        [ -f "$part/partition" ] || continue
        dev="/dev/${part##*/}"
        first=$(dd if="$dev" bs=512 count=1 2>/dev/null | head -n 1)
        if [ "$first" = "$MAGIC" ]; then
            DATA=$dev
            return 0
        fi
    done
    return 1
}

wait_data() {
    tries=$1
    while [ "$tries" -gt 0 ]; do
        find_data && return 0
        usleep 50000
        tries=$((tries - 1))
    done
    return 1
}

power_off() {
    sync
    poweroff -f
}

# Block on each "Power Button" input device; the first event (key press from
# an ACPI power button notification) syncs and powers off.  Reading evdev
# directly needs no acpid configuration and no polling.
watch_power_button() {
    found=0
    for ev in /sys/class/input/event*; do
        [ -e "$ev" ] || continue
        [ "$(cat "$ev/device/name" 2>/dev/null)" = "Power Button" ] || continue
        found=1
        (
            dd if="/dev/input/${ev##*/}" of=/dev/null bs=24 count=1 2>/dev/null
            power_off
        ) &
    done
    [ "$found" = 1 ] || say "GUEST-ERROR no ACPI power button; only a hard stop will end this guest"
}

field() {
    echo "$HEADER" | sed -n "s/^$1=//p"
}

check_and_count() {
    HEADER=$(dd if="$DATA" bs=512 count=1 2>/dev/null | tr -d '\000')
    id=$(field id)
    off=$(field payload_offset)
    len=$(field payload_len)
    want=$(field payload_sha256)
    if [ -z "$id" ] || [ -z "$off" ] || [ -z "$len" ] || [ -z "$want" ]; then
        say "GUEST-ERROR data header on $DATA is incomplete"
        return 1
    fi

    got=$(dd if="$DATA" bs=65536 skip="$off" count="$len" iflag=skip_bytes,count_bytes \
        2>/dev/null | sha256sum | cut -d ' ' -f 1)
    state=BAD
    [ "$got" = "$want" ] && state=ok

    count=$(dd if="$DATA" bs=512 skip=1 count=1 2>/dev/null | tr -d '\000' \
        | sed -n 's/^counter=0*\([0-9][0-9]*\).*/\1/p')
    boot=$((${count:-0} + 1))
    # O_DIRECT + fsync: the new counter must reach the virtual disk before the
    # marker is printed, since the host may kill the VM right after seeing it.
    if ! printf 'counter=%d\n' "$boot" \
        | dd of="$DATA" bs=512 seek=1 count=1 conv=sync,notrunc,fsync oflag=direct \
            2>/dev/null; then
        printf 'counter=%d\n' "$boot" \
            | dd of="$DATA" bs=512 seek=1 count=1 conv=sync,notrunc,fsync 2>/dev/null \
            || say "GUEST-ERROR cannot write boot counter to $DATA"
    fi
    sync

    say "GUEST-BOOTED id=$id boot=$boot payload=$state"
}

# SYSLINUX leaves terminal-reset escapes without a newline on the serial
# line and the quiet kernel adds none; end that line so the marker starts one.
say ""

# Power button first: an ACPI press that arrives before button.ko is bound
# is lost, so keep that window as short as possible.
load_group power
watch_power_button
load_group virtio

if wait_data 20 || { load_group scsi; wait_data 100; }; then
    check_and_count
else
    say "GUEST-ERROR no ferry data partition found"
fi

while :; do
    sleep 3600
done
