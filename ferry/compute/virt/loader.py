"""Driver registry: `--driver NAME` picks one of these."""

from __future__ import annotations

from pathlib import Path

from ferry.compute.virt.driver import VirtDriver
from ferry.compute.virt.fake import FakeDriver


def load_driver(name: str, host: str, instances_path: Path) -> VirtDriver:
    if name == "fake":
        return FakeDriver(host, instances_path)
    if name == "libvirt":
        # Imported lazily: libvirt-python is only needed where guests are real.
        from ferry.compute.virt.libvirt import LibvirtDriver

        return LibvirtDriver(host, instances_path)
    raise ValueError(f"unknown virt driver {name!r} (choose fake or libvirt)")
