"""The tiny test guest: build it, boot it under QEMU TCG, shut it down via ACPI.

The QEMU tests are marked ``libvirt`` (slow, need qemu-system-x86 and the
build tools); the package cache is the default one (``$FERRY_CACHE_DIR`` or
``~/.cache/ferry/guest``) so only the first run downloads anything.  The
format checks at the bottom need nothing but Python.
"""

from __future__ import annotations

import gzip
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ferry.image.guest import Marker, build_guest_image, parse_markers
from ferry.image.guest.dataarea import (
    PAYLOAD_LEN,
    build_data_area,
    payload_for,
    payload_position,
    read_boot_counter,
    read_header,
)
from ferry.image.guest.disk import Partition, master_boot_record
from ferry.image.guest.initramfs import CpioEntry, write_cpio
from ferry.image.guest.packages import default_cache_dir

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 90.0  # TCG on 2 shared cores; a normal boot takes ~3 s
POWERDOWN_TIMEOUT = 30.0
GUEST_ID = "ferry-test-1"

needs_qemu = pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed")
_serial = itertools.count()


class Guest:
    """One QEMU process booting a guest disk, with a serial log and an HMP monitor."""

    def __init__(self, image: Path, workdir: Path, fmt: str = "raw") -> None:
        n = next(_serial)
        self.log = workdir / f"console{n}.log"
        # Short name: unix socket paths are limited to 107 bytes.
        self.monitor = workdir / f"mon{n}.sock"
        self.proc = subprocess.Popen(
            [
                QEMU, "-accel", "tcg", "-m", "128", "-nographic", "-no-reboot",
                "-nic", "none",
                "-drive", f"file={image},if=virtio,format={fmt}",
                "-serial", f"file:{self.log}",
                "-monitor", f"unix:{self.monitor},server,nowait",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.started = time.monotonic()

    def console(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_marker(self) -> tuple[Marker, float]:
        """The boot's marker and the seconds from QEMU start until it appeared."""
        deadline = self.started + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            text = self.console()
            markers = parse_markers(text)
            if markers:
                assert len(markers) == 1, f"more than one marker in one boot:\n{text}"
                return markers[0], time.monotonic() - self.started
            assert "GUEST-ERROR" not in text, f"guest reported an error:\n{text}"
            assert self.proc.poll() is None, f"QEMU exited early:\n{self._qemu_out()}\n{text}"
            time.sleep(0.1)
        raise AssertionError(f"no marker after {BOOT_TIMEOUT:.0f}s:\n{self.console()}")

    def acpi_powerdown(self) -> float:
        """Press the ACPI power button; return seconds until QEMU exited cleanly."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.monitor))
            sock.recv(4096)  # banner
            sock.sendall(b"system_powerdown\n")
            pressed = time.monotonic()
            try:
                returncode = self.proc.wait(timeout=POWERDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"guest ignored ACPI powerdown for {POWERDOWN_TIMEOUT:.0f}s:\n{self.console()}"
                ) from None
        assert returncode == 0, f"QEMU exit code {returncode}:\n{self._qemu_out()}"
        # The kernel's own message: the guest powered itself off, QEMU did not just quit.
        assert "Power down" in self.console()
        return time.monotonic() - pressed

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def _qemu_out(self) -> str:
        if self.proc.poll() is None or self.proc.stdout is None:
            return ""
        return self.proc.stdout.read().decode(errors="replace")


BootFn = Callable[..., Guest]


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[BootFn]:
    guests: list[Guest] = []

    def start(image: Path, fmt: str = "raw") -> Guest:
        guest = Guest(image, tmp_path, fmt)
        guests.append(guest)
        return guest

    yield start
    for guest in guests:
        guest.kill()


@pytest.fixture(scope="module")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built image; tests copy it before booting."""
    return build_guest_image(tmp_path_factory.mktemp("guest") / "guest.img", GUEST_ID)


def _boot_once(boot: BootFn, image: Path, fmt: str = "raw") -> tuple[Marker, float, float]:
    guest = boot(image, fmt)
    marker, seconds = guest.wait_marker()
    off_seconds = guest.acpi_powerdown()
    return marker, seconds, off_seconds


@pytest.mark.libvirt
@needs_qemu
def test_image_is_small_raw_mbr_disk(built_image: Path) -> None:
    assert built_image.stat().st_size < 64 * 1024 * 1024
    header = read_header(built_image)
    assert header.guest_id == GUEST_ID
    assert header.payload_len == PAYLOAD_LEN
    assert read_boot_counter(built_image) == 0


@pytest.mark.libvirt
@needs_qemu
def test_boots_twice_counts_and_powers_off(built_image: Path, tmp_path: Path, boot: BootFn) -> None:
    image = tmp_path / "disk.img"
    shutil.copyfile(built_image, image)

    first, seconds, off = _boot_once(boot, image)
    assert first == Marker(GUEST_ID, 1, True)
    print(f"first boot: marker after {seconds:.1f}s, powered off {off:.1f}s after ACPI press")
    assert read_boot_counter(image) == 1

    second, seconds, _ = _boot_once(boot, image)
    assert second == Marker(GUEST_ID, 2, True)
    print(f"second boot: marker after {seconds:.1f}s")
    assert read_boot_counter(image) == 2


@pytest.mark.libvirt
@needs_qemu
def test_corrupted_payload_is_reported(built_image: Path, tmp_path: Path, boot: BootFn) -> None:
    image = tmp_path / "disk.img"
    shutil.copyfile(built_image, image)
    position = payload_position(image) + 12345
    with image.open("r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([byte ^ 0x5A]))

    marker, _, _ = _boot_once(boot, image)
    assert marker == Marker(GUEST_ID, 1, False)


@pytest.mark.libvirt
@needs_qemu
def test_boots_from_qcow2_overlay(built_image: Path, tmp_path: Path, boot: BootFn) -> None:
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img not installed")
    overlay = tmp_path / "overlay.qcow2"
    backing = ["-b", str(built_image), "-F", "raw"]
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", *backing, str(overlay)], check=True)
    marker, _, _ = _boot_once(boot, overlay, fmt="qcow2")
    assert marker == Marker(GUEST_ID, 1, True)
    assert read_boot_counter(built_image) == 0  # the guest wrote to the overlay only


@pytest.mark.libvirt
@needs_qemu
def test_second_build_downloads_nothing(built_image: Path, tmp_path: Path) -> None:
    debs = default_cache_dir() / "debs"
    before = {p.name: p.stat().st_mtime_ns for p in debs.glob("*.deb")}
    assert before, "the module fixture should have filled the cache"
    other = build_guest_image(tmp_path / "other.raw", "other-guest")
    after = {p.name: p.stat().st_mtime_ns for p in debs.glob("*.deb")}
    assert after == before
    assert read_header(other).guest_id == "other-guest"


# --- format checks, no QEMU or packages needed -------------------------------


def test_data_area_is_deterministic_and_self_describing(tmp_path: Path) -> None:
    area = build_data_area("vm-7")
    assert area == build_data_area("vm-7")
    assert payload_for("vm-7") != payload_for("vm-8")
    assert area.startswith(b"FERRY-GUEST-DATA 1\nid=vm-7\n")

    image = tmp_path / "disk.img"
    boot = Partition(2048, 2048, 0x06, active=True)
    data = Partition(4096, len(area) // 512, 0xDA)
    with image.open("wb") as handle:
        handle.write(master_boot_record(b"\0" * 440, 0x12345678, [boot, data]))
        handle.seek(4096 * 512)
        handle.write(area)
    assert read_header(image).guest_id == "vm-7"
    assert read_boot_counter(image) == 0
    position = payload_position(image)
    assert image.read_bytes()[position : position + PAYLOAD_LEN] == payload_for("vm-7")


def test_cpio_newc_layout() -> None:
    archive = write_cpio([CpioEntry("init", 0o100755, b"#!/bin/sh\n")])
    assert archive.startswith(b"070701")
    assert b"init\0" in archive and b"TRAILER!!!\0" in archive
    assert len(archive) % 4 == 0
    assert gzip.decompress(gzip.compress(archive)) == archive
    # name size field (namesize includes the NUL) of the first header
    assert int(archive[94:102], 16) == len("init") + 1
