"""A tiny self-checking test guest for migration tests.

``build_guest_image`` makes a < 64 MiB raw disk (Debian cloud kernel +
busybox initramfs + syslinux) whose every boot prints one
``GUEST-BOOTED id=<id> boot=<n> payload=ok|BAD`` line on the serial console
and which powers off on an ACPI power-button press.  ``parse_markers`` /
``last_marker`` read those lines back.  See ``builder.py`` for the parts.
"""

from ferry.image.guest.builder import build_guest_image
from ferry.image.guest.errors import GuestImageError
from ferry.image.guest.marker import Marker, last_marker, parse_markers

__all__ = ["GuestImageError", "Marker", "build_guest_image", "last_marker", "parse_markers"]
