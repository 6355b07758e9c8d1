"""KVM or TCG? Decided by booting a probe guest, once per machine.

The presence of /dev/kvm proves nothing: on some machines it is a PVM /
nested flavour on which ordinary guests pause, or run so slowly (every
instruction trapped) that a Linux kernel never gets past its decompressor.
So the verdict comes from a *probe boot*:

1. A 512-byte boot sector (`PROBE_ASM`, assembled into `PROBE_SECTOR_HEX`)
   goes real mode -> protected mode -> long mode, spins a 20M-iteration loop,
   writes 32 MiB of RAM, then prints ``FERRY-PROBE-OK`` on COM1. It prints a
   progress letter after each stage (R, P, L, A, B), so a failed verdict says
   how far the guest got.
2. It is booted by SeaBIOS in a transient libvirt domain of type 'kvm'
   (128 MiB, no network, serial to a file). KVM passes when the marker shows
   up within `KVM_PROBE_TIMEOUT` seconds while the domain stays running (not
   paused/crashed/shut off). Real KVM does it in well under a second, TCG in
   about one, a broken KVM never (measured: ~2M instructions/s).
3. Otherwise the same probe runs with type 'qemu' (TCG) to check the stack
   works at all; the verdict is then 'tcg' (or an error when TCG fails too).

The verdict is cached in ``<cache dir>/accel.json`` keyed by kernel release,
libvirt version and QEMU version, so it is probed once per machine. The cache
dir is $FERRY_CACHE_DIR, else $XDG_CACHE_HOME/ferry, else ~/.cache/ferry.
$FERRY_VIRT_ACCEL=kvm|tcg overrides everything (auto = probe).

To extend the probe (e.g. to exercise another CPU feature), edit `PROBE_ASM`,
reassemble as shown in its header, paste the hex into `PROBE_SECTOR_HEX`,
and bump `CACHE_VERSION` so cached verdicts are re-probed; the unit test
`test_probe_sector_matches_source` reassembles and compares when `as` exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ferry.compute.virt.driver import DriverError
from ferry.compute.virt.libvirt.xml import build_probe_xml

Accel = Literal["kvm", "tcg"]

ACCEL_ENV = "FERRY_VIRT_ACCEL"
CACHE_DIR_ENV = "FERRY_CACHE_DIR"
CACHE_FILE = "accel.json"
CACHE_VERSION = 1
PROBE_MARKER = "FERRY-PROBE-OK"
KVM_PROBE_TIMEOUT = 3.0
TCG_PROBE_TIMEOUT = 30.0

#: libvirt <domain type=...> for each accelerator
DOMAIN_TYPES: dict[str, str] = {"kvm": "kvm", "tcg": "qemu"}

PROBE_ASM = r"""
# Ferry accelerator probe boot sector.
# as --32 -o probe.o probe.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o probe.bin probe.o
    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    cld
    mov $0x3f8, %dx
    mov $'R', %al
    out %al, %dx
    # zero PML4/PDPT/PD at 0x1000..0x3fff
    mov $0x1000, %di
    xor %eax, %eax
    mov $0x0c00, %ecx
    rep stosl
    movl $0x2003, 0x1000
    movl $0x3003, 0x2000
    # PD: 512 x 2 MiB identity pages = first 1 GiB
    mov $0x3000, %di
    mov $0x83, %eax
    mov $512, %cx
1:  movl %eax, (%di)
    add $0x200000, %eax
    add $8, %di
    loop 1b
    lgdtl gdtr
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $pm
    .code32
pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $'P', %al
    out %al, %dx
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0x1000, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0
    ljmp $0x18, $lm
    .code64
lm:
    mov $0x3f8, %dx
    mov $'L', %al
    out %al, %dx
    # A: 20M iterations of a register loop
    mov $20000000, %rcx
2:  dec %rcx
    jnz 2b
    mov $'A', %al
    out %al, %dx
    # B: write 32 MiB at 16 MiB
    mov $0x1000000, %rdi
    mov $0x400000, %rcx
    xor %rax, %rax
    rep stosq
    mov $'B', %al
    out %al, %dx
    lea msg(%rip), %rsi
3:  lodsb
    test %al, %al
    jz 4f
    out %al, %dx
    jmp 3b
4:  hlt
    jmp 4b
msg: .asciz "\nFERRY-PROBE-OK\n"
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
gdtr:
    .word gdtr - gdt - 1
    .long gdt
    .org 510
    .byte 0x55, 0xaa
"""

# PROBE_ASM assembled, without the zero padding and the 55aa signature.
PROBE_SECTOR_HEX = (
    "fa31c08ed88ec08ed0bc007cfcbaf803b052eebf00106631c066b9000c000066f3ab66c706"
    "00100320000066c706002003300000bf003066b883000000b9000266890566050000200083"
    "c708e2f2660f0116187d0f20c06683c8010f22c066ea667c0000080066b810008ed88ec08e"
    "d0b050ee0f20e083c8200f22e0b8001000000f22d8b9800000c00f320d000100000f300f20"
    "c00d000000800f22c0eaa47c0000180066baf803b04cee48c7c1002d310148ffc975fbb041"
    "ee48c7c70000000148c7c1000040004831c0f348abb042ee488d350b000000ac84c07403ee"
    "ebf8f4ebfd0a46455252592d50524f42452d4f4b0a008d7426000000000000000000ffff00"
    "00009acf00ffff00000092cf00ffff0000009aaf001f00f87c"
)


def probe_sector() -> bytes:
    """The 512-byte MBR the probe boots."""
    code = bytes.fromhex(PROBE_SECTOR_HEX)
    if len(code) > 510:
        raise AssertionError("probe sector code is larger than 510 bytes")
    return code.ljust(510, b"\0") + b"\x55\xaa"


def domain_type_for(accel: str) -> str:
    """libvirt domain type for an accelerator verdict ('kvm' -> 'kvm', 'tcg' -> 'qemu')."""
    try:
        return DOMAIN_TYPES[accel]
    except KeyError:
        raise DriverError(f"unknown accelerator {accel!r} (kvm or tcg)") from None


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CACHE_DIR_ENV):
        return Path(env[CACHE_DIR_ENV])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "ferry"
    return Path.home() / ".cache" / "ferry"


def accel_override(env: Mapping[str, str] | None = None) -> Accel | None:
    """The accelerator forced by $FERRY_VIRT_ACCEL, None for auto/unset."""
    env = os.environ if env is None else env
    value = env.get(ACCEL_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value == "kvm":
        return "kvm"
    if value in ("tcg", "qemu"):
        return "tcg"
    raise DriverError(f"{ACCEL_ENV}={value!r}: expected kvm, tcg or auto")


@dataclass(frozen=True)
class ProbeResult:
    domain_type: str
    ok: bool
    reason: str
    seconds: float
    console: str


_STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutting down",
    5: "shut off",
    6: "crashed",
    7: "pmsuspended",
}


def probe_boot(conn: Any, domain_type: str, workdir: Path, timeout: float) -> ProbeResult:
    """Boot the probe sector in a transient domain of `domain_type` (blocking).

    `conn` is an open libvirt connection. The domain is always destroyed.
    """
    import libvirt

    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "probe.raw"
    with open(disk, "wb") as f:
        f.write(probe_sector())
        f.truncate(1 << 20)
    console = workdir / f"console-{domain_type}.log"
    console.unlink(missing_ok=True)
    name = f"{PROBE_PREFIX}{os.getpid()}-{uuidlib.uuid4().hex[:8]}"
    xml = build_probe_xml(name, domain_type, disk, console)

    def read_console() -> str:
        try:
            return console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    start = time.monotonic()
    try:
        dom = conn.createXML(xml, 0)
    except libvirt.libvirtError as e:
        return ProbeResult(domain_type, False, f"could not start: {e}", 0.0, "")
    try:
        start = time.monotonic()
        while True:
            out = read_console()
            elapsed = time.monotonic() - start
            if PROBE_MARKER in out:
                return ProbeResult(domain_type, True, "probe guest booted", elapsed, out)
            state, why = dom.state()
            if state != libvirt.VIR_DOMAIN_RUNNING:
                return ProbeResult(
                    domain_type,
                    False,
                    f"guest went {_STATE_NAMES.get(state, str(state))} (reason {why}) "
                    f"after {elapsed:.1f}s, console {out.strip()!r}",
                    elapsed,
                    out,
                )
            if elapsed > timeout:
                return ProbeResult(
                    domain_type,
                    False,
                    f"no {PROBE_MARKER} within {timeout:.1f}s: the guest only reached "
                    f"{out.strip()!r} (stages R,P,L,A,B); this accelerator runs guests "
                    "too slowly or not at all",
                    elapsed,
                    out,
                )
            time.sleep(0.1)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()


PROBE_PREFIX = "ferry-accel-probe-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphan_probes(conn: Any) -> list[str]:
    """Destroy probe domains whose prober is gone; return their names.

    A probe domain is transient and destroyed by its prober, but a prober
    killed mid-probe (a compute host stopped while starting) leaves it running,
    and a TCG guest left running costs a core on a small machine forever.
    """
    import libvirt

    gone = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        name = dom.name()
        pid = name.removeprefix(PROBE_PREFIX).split("-", 1)[0]
        if name.startswith(PROBE_PREFIX) and pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
                gone.append(name)
    return gone


def cache_key(conn: Any) -> str:
    return (
        f"v{CACHE_VERSION} kernel={os.uname().release} "
        f"libvirt={conn.getLibVersion()} qemu={conn.getVersion()}"
    )


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "accel.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_cache(cache_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((cache_dir / CACHE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_dir: Path, data: dict[str, dict[str, Any]]) -> None:
    tmp = cache_dir / f".{CACHE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(cache_dir / CACHE_FILE)


def detect_accel(
    conn: Any,
    cache_dir: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    kvm_timeout: float = KVM_PROBE_TIMEOUT,
    tcg_timeout: float = TCG_PROBE_TIMEOUT,
    kvm_device: Path = Path("/dev/kvm"),
) -> Accel:
    """'kvm' or 'tcg' for this machine: override, else cache, else probe (blocking)."""
    forced = accel_override(env)
    if forced is not None:
        return forced
    if not kvm_device.exists():
        return "tcg"  # nothing to probe, and nothing worth caching
    cache_dir = default_cache_dir(env) if cache_dir is None else cache_dir
    key = cache_key(conn)
    with _locked(cache_dir):
        cached = read_cache(cache_dir).get(key)
        if cached and cached.get("accel") in DOMAIN_TYPES:
            verdict: Accel = "kvm" if cached["accel"] == "kvm" else "tcg"
            return verdict
        sweep_orphan_probes(conn)
        with tempfile.TemporaryDirectory(prefix="probe-", dir=cache_dir) as tmp:
            kvm = probe_boot(conn, "kvm", Path(tmp), kvm_timeout)
            tcg: ProbeResult | None = None
            if not kvm.ok:
                tcg = probe_boot(conn, "qemu", Path(tmp), tcg_timeout)
                if not tcg.ok:
                    raise DriverError(
                        f"neither KVM ({kvm.reason}) nor TCG ({tcg.reason}) can run a guest"
                    )
        verdict = "kvm" if kvm.ok else "tcg"
        entry = {
            "accel": verdict,
            "probed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kvm": {k: v for k, v in asdict(kvm).items() if k != "console"},
            "tcg": {k: v for k, v in asdict(tcg).items() if k != "console"} if tcg else None,
        }
        data = read_cache(cache_dir)
        data[key] = entry
        _write_cache(cache_dir, data)
        return verdict
