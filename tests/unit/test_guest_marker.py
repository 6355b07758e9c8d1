"""Parsing of the test guest's GUEST-BOOTED console markers."""

from __future__ import annotations

import pytest

from ferry.image.guest import Marker, last_marker, parse_markers


def test_single_marker() -> None:
    text = "GUEST-BOOTED id=vm-1 boot=1 payload=ok\r\n"
    assert parse_markers(text) == [Marker(guest_id="vm-1", boot=1, payload_ok=True)]


def test_bad_payload() -> None:
    marker = last_marker("GUEST-BOOTED id=vm-1 boot=3 payload=BAD\n")
    assert marker == Marker(guest_id="vm-1", boot=3, payload_ok=False)


def test_markers_among_firmware_and_kernel_noise() -> None:
    text = (
        "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n"
        "SYSLINUX 6.04 EDD 20210613 Copyright (C) 1994-2015 H. Peter Anvin et al\r\n"
        "\x1bc\x1b[?7l\x1b[2JGUEST-BOOTED id=a.b_c-9 boot=1 payload=ok\r\n"
        "[    3.009887] reboot: Power down\r\n"
        "SeaBIOS (version 1.16.2)\r\n"
        "GUEST-BOOTED id=a.b_c-9 boot=2 payload=ok\r\n"
    )
    markers = parse_markers(text)
    assert [m.boot for m in markers] == [1, 2]
    assert {m.guest_id for m in markers} == {"a.b_c-9"}
    assert last_marker(text) == Marker("a.b_c-9", 2, True)


def test_no_marker() -> None:
    assert parse_markers("") == []
    assert last_marker("SeaBIOS\r\nBooting from Hard Disk...\r\n") is None


def test_guest_error_lines_are_not_markers() -> None:
    assert parse_markers("GUEST-ERROR no ferry data partition found\n") == []


@pytest.mark.parametrize(
    "line",
    [
        "GUEST-BOOTED id=vm-1 boot=1 payload=okay",  # not the ok/BAD token
        "GUEST-BOOTED id=vm-1 boot=x payload=ok",
        "GUEST-BOOTED id= boot=1 payload=ok",
        "GUEST-BOOTED id=vm-1 boot=1",  # cut off while the console was captured
        "GUEST-BOOTED id=vm-1 boot=1 payload=bad",
    ],
)
def test_malformed_lines_are_ignored(line: str) -> None:
    assert parse_markers(line + "\n") == []


def test_multi_digit_boot_counter() -> None:
    assert last_marker("GUEST-BOOTED id=x boot=12345 payload=ok") == Marker("x", 12345, True)


def test_marker_is_hashable_and_frozen() -> None:
    marker = Marker("x", 1, True)
    assert {marker, Marker("x", 1, True)} == {marker}
    with pytest.raises(AttributeError):
        marker.boot = 2  # type: ignore[misc]
