"""Libvirt/QEMU virt driver (`--driver libvirt`).

Modules:
  driver.py   LibvirtDriver, the VirtDriver implementation
  xml.py      domain XML builder (pure, unit-tested)
  accel.py    KVM-vs-TCG verdict by probe boot, cached per machine
  daemons.py  ensure_daemons(): start libvirtd/virtlogd when they do not run

`LibvirtDriver` is imported lazily so that `daemons`, `xml` and `accel`
work without libvirt-python (e.g. from a Makefile: ``python -m
ferry.compute.virt.libvirt.daemons``). To add a module, keep libvirt imports
out of this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferry.compute.virt.libvirt.driver import LibvirtDriver

__all__ = ["LibvirtDriver"]


def __getattr__(name: str) -> Any:
    if name == "LibvirtDriver":
        from ferry.compute.virt.libvirt.driver import LibvirtDriver

        return LibvirtDriver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
