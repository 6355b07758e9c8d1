"""ComputeManager: one per host; serves `compute.<host>` RPC, never touches the DB.

Each public coroutine is an RPC method named in `ferry.bus.catalogue`; the
conductor calls them in the order of the state machine and records results.
Every method is idempotent: the conductor may send a step again after a
restart. To add one: declare it in the catalogue, add it here with JSON-only
arguments and result, and call it from a conductor step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ferry.bus.base import Bus, Handler, endpoint_handler
from ferry.bus.catalogue import CONDUCTOR_TOPIC, compute_topic
from ferry.compute.instance_store import InstanceStore, base_name
from ferry.compute.sending import DiskSends
from ferry.compute.virt.driver import InstanceSpec, VirtDriver
from ferry.image.cache import ImageCache, ImageUnavailable
from ferry.transfer import (
    Progress,
    TokenBucket,
    TokenRegistry,
    TransferGrant,
    TransferServer,
    TransientTransferError,
    send_files,
)

log = logging.getLogger(__name__)


class PreflightFailed(Exception):
    pass


class StaleRequest(Exception):
    pass


_READ_ONLY = frozenset({"console_output", "power_state", "host_resources"})
# Asks that join a running send, or prepare its receiving end (resize to the same host).
_BESIDE_A_SEND = frozenset({"send_disks", "expect_transfer"})
GRANTS_FILE = "transfer-grants.json"
# Without a give-up time a transfer stops after this many attempts; with one,
# the time alone decides (a destination agent may take a while to return).
_ATTEMPTS = 6
_ATTEMPTS_UNTIL_GIVE_UP = 1_000_000


def _instance_key(args: dict[str, Any]) -> str | None:
    for name in ("uuid", "instance_uuid"):
        if isinstance(args.get(name), str):
            return str(args[name])
    inst = args.get("instance")
    return str(inst["uuid"]) if isinstance(inst, dict) and "uuid" in inst else None


def spec_from(instance: dict[str, Any], image: dict[str, Any] | None = None) -> InstanceSpec:
    image_id = instance["image_id"]
    fmt = (image or {}).get("disk_format") or instance.get("base_format") or "raw"
    return InstanceSpec(
        uuid=instance["uuid"], name=instance.get("name", instance["uuid"]),
        vcpus=int(instance["vcpus"]), memory_mb=int(instance["memory_mb"]),
        root_gb=int(instance["root_gb"]), image_id=image_id,
        base_name=base_name(image_id), base_format=fmt,
    )


def _clear_dir(path: Path) -> None:
    """Remove what a directory holds but keep the directory (it may be a mount point)."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink(missing_ok=True)


class _Moved:
    """When a transfer last moved (bytes verified or sent), for its give-up time."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.mark = (-1, -1)

    def saw(self, done: int, sent: int) -> None:
        if (done, sent) != self.mark:
            self.mark, self.at = (done, sent), time.monotonic()

    def idle(self) -> float:
        return time.monotonic() - self.at


class ComputeManager:
    """`state_dir` holds what the host must remember across an agent restart: the
    transfer grants it accepted (`transfer-grants.json`), so a transfer cut by the
    restart resumes from the partial files' journal. Without it grants live in
    memory and a restart costs a full resend. `max_bandwidth` (bytes/s, 0 = none)
    caps what this host sends, and separately what it receives, over all transfers.
    """

    def __init__(self, host: str, driver: VirtDriver, bus: Bus, images: ImageCache,
                 data_host: str, data_port: int = 0, zone: str = "nova",
                 report_interval: float = 10.0, state_dir: Path | None = None,
                 max_bandwidth: float = 0.0, progress_interval: float = 0.5) -> None:
        self.host = host
        self.driver = driver
        self.bus = bus
        self.images = images
        self.store = InstanceStore(driver.instances_path)
        self.zone = zone
        self.state_dir = state_dir
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = TokenRegistry(path=state_dir / GRANTS_FILE if state_dir else None)
        self.transfer = TransferServer(data_host, data_port, self.tokens,
                                       rate_limit=max_bandwidth or None)
        self.send_limiter = TokenBucket(max_bandwidth or None)
        self.progress_interval = progress_interval
        self.report_interval = report_interval
        self._heartbeat: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._fences: dict[str, tuple[int, ...]] = {}
        self.sends = DiskSends()
        self._casts: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.store.ensure_dirs()
        await self.driver.init_host()
        await self.transfer.start()
        await self.report_state()
        await self.bus.serve(compute_topic(self.host), self._dispatch())
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())

    def _dispatch(self) -> Handler:
        inner = endpoint_handler(self, "compute")

        async def handle(method: str, args: dict[str, Any]) -> Any:
            fence = args.pop("fence", None)
            key = _instance_key(args)
            if key is None or method in _READ_ONLY:
                return await inner(method, args)
            # One operation per instance at a time (Nova's synchronized(uuid)): a
            # rollback sent by a restarted conductor waits for the step that an
            # earlier conductor started, instead of racing it.
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                if fence is not None:
                    self._check_fence(key, method, tuple(fence))
                if method not in _BESIDE_A_SEND:
                    # A send outlives its RPC (ferry.compute.sending); whatever
                    # comes next for the instance (a rollback, a confirm) stops it.
                    await self.sends.stop_instance(key)
                return await inner(method, args)

        return handle

    def _check_fence(self, key: str, method: str, fence: tuple[int, ...]) -> None:
        """Refuse a step older than one already done for this instance.

        The conductor tags every migration step with (migration id, generation).
        A message delayed past a conductor's death must not run after the new
        conductor's rollback: it would power the guest off again.
        """
        seen = self._fences.get(key)
        if seen is not None and fence < seen:
            raise StaleRequest(f"{method} for {key} is older than a step already done "
                               f"({list(fence)} < {list(seen)}); ignored")
        self._fences[key] = fence

    async def stop(self) -> None:
        if self._heartbeat:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self.bus.unserve(compute_topic(self.host))
        await self.transfer.stop()
        await self.sends.close()
        for task in list(self._casts):
            task.cancel()
        await asyncio.gather(*self._casts, return_exceptions=True)
        await self.driver.cleanup_host()

    @property
    def data_address(self) -> str:
        host, port = self.transfer.address
        return f"{host}:{port}"

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            try:
                await self.report_state()
            except Exception:
                log.exception("heartbeat from %s failed", self.host)

    async def report_state(self) -> None:
        await self.bus.cast(CONDUCTOR_TOPIC, "report_state", {
            "host": self.host, "zone": self.zone, **(await self.host_resources())})

    # -- plain lifecycle RPCs ------------------------------------------------

    async def host_resources(self) -> dict[str, Any]:
        r = await self.driver.resources()
        return {"vcpus": r.vcpus, "memory_mb": r.memory_mb, "disk_gb": r.disk_gb,
                "hypervisor_type": r.hypervisor_type,
                "hypervisor_version": r.hypervisor_version,
                "data_address": self.data_address}

    async def spawn(self, instance: dict[str, Any], image: dict[str, Any]) -> int:
        await self.images.ensure(image)
        await self.driver.spawn(spec_from(instance, image))
        return int(await self.driver.power_state(instance["uuid"]))

    async def stop_instance(self, uuid: str, timeout: float = 60,
                            retry_interval: float = 10) -> int:
        await self.driver.power_off(uuid, timeout, retry_interval)
        return int(await self.driver.power_state(uuid))

    async def start_instance(self, uuid: str) -> int:
        await self.driver.power_on(uuid)
        return int(await self.driver.power_state(uuid))

    async def power_state(self, uuid: str) -> int:
        return int(await self.driver.power_state(uuid))

    async def delete_instance(self, uuid: str) -> None:
        await self.driver.destroy(uuid)
        self.store.remove(uuid)
        self.store.remove_resize(uuid)

    async def console_output(self, uuid: str, length: int | None = None) -> str:
        text = await self.driver.console_output(uuid)
        if length is not None and length >= 0:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-length:]) if length else ""
        return text

    # -- migration: destination pre-flight ----------------------------------

    async def check_can_migrate_to(self, instance: dict[str, Any], image: dict[str, Any],
                                   disk_bytes: int) -> dict[str, Any]:
        free = self.store.free_bytes()
        # Room for the disks plus 10% for metadata and the base image.
        if free < disk_bytes * 1.1:
            raise PreflightFailed(
                f"{self.host}: {free} bytes free, {int(disk_bytes * 1.1)} needed")
        need_base = False
        if not self.images.has(image["id"]):
            # Fetch now, before the guest is powered off: a base that cannot be
            # had must fail the pre-flight, not the finish step. When the image
            # service no longer has it, a peer that has it cached can push it.
            try:
                await self.images.ensure(image)
            except ImageUnavailable as exc:
                log.info("%s: %s; a peer will have to provide it", self.host, exc)
                need_base = True
        return {"free_bytes": free, "data_address": self.data_address, "need_base": need_base}

    async def has_base(self, image_id: str) -> int | None:
        """Size of the cached base, or None when this host does not have it."""
        path = self.images.path_for(image_id)
        return path.stat().st_size if path.exists() else None

    async def expect_base(self, token: str, migration_uuid: str, image_id: str, size: int,
                          ttl: float = 900) -> None:
        self.store.ensure_dirs()
        self.tokens.expect(TransferGrant(token=token, migration_uuid=migration_uuid,
                                         directory=self.images.base_dir,
                                         files={base_name(image_id): size},
                                         expires_at=time.time() + ttl))

    async def send_base(self, migration_uuid: str, image_id: str, address: str,
                        token: str) -> dict[str, Any]:
        host, port = address.rsplit(":", 1)
        result = await send_files((host, int(port)), token, migration_uuid,
                                  self.images.base_dir, [base_name(image_id)])
        return {"bytes_sent": result.bytes_sent, "seconds": result.seconds}

    async def create_shared_probe(self) -> str:
        name = f".ferry-shared-{secrets.token_hex(8)}.tmp"
        (self.store.root / name).touch()
        return name

    async def check_shared_probe(self, name: str) -> bool:
        if "/" in name or not name.startswith(".ferry-shared-"):
            raise ValueError("bad probe name")
        return (self.store.root / name).exists()

    async def remove_shared_probe(self, name: str) -> None:
        if "/" in name or not name.startswith(".ferry-shared-"):
            raise ValueError("bad probe name")
        (self.store.root / name).unlink(missing_ok=True)

    async def check_data_plane(self, address: str) -> bool:
        host, port = address.rsplit(":", 1)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True

    async def expect_transfer(self, token: str, migration_uuid: str, instance_uuid: str,
                              files: dict[str, int], ttl: float = 900) -> dict[str, Any]:
        """Register the grant for a migration's disks; idempotent per token.

        Returns {"grant": "new" | "resumed" | "complete"}. The same token again (the
        conductor resumed its step) keeps the grant and the partial files with
        their journal, so the transfer resumes where it stopped; "complete" means
        its files were already verified and put in place. A new token clears what
        an earlier, other migration may have left in the instance directory.
        """
        target = self.store.path(instance_uuid)
        state = self.tokens.state(token)
        if state == "used":
            missing = [n for n in files if not (target / n).exists()]
            if missing:
                raise RuntimeError(f"{self.host}: the transfer of migration {migration_uuid} "
                                   f"completed but {missing} are gone")
            return {"grant": "complete"}
        if state is not None:
            self.tokens.renew(token, time.time() + ttl)
            return {"grant": "resumed"}
        # A partial copy from an earlier attempt must not mix with this one.
        if target.exists() and not self.store.resize_path(instance_uuid).exists():
            await asyncio.to_thread(_clear_dir, target)
        self.tokens.expect(TransferGrant(token=token, migration_uuid=migration_uuid,
                                         directory=target, files=dict(files),
                                         expires_at=time.time() + ttl))
        return {"grant": "new"}

    # -- migration: source ---------------------------------------------------

    async def power_off_for_migration(self, uuid: str, timeout: float,
                                      retry_interval: float) -> dict[str, Any]:
        await self.driver.power_off(uuid, timeout, retry_interval)
        kept = self.store.move_to_resize(uuid)
        disks = await self.driver.disk_info(uuid, kept)
        return {"disks": [d.__dict__ for d in disks]}

    async def send_disks(self, uuid: str, migration_uuid: str, address: str, token: str,
                         names: list[str], shared: bool, rate_limit: float | None = None,
                         give_up: float | None = None, wait: float | None = None
                         ) -> dict[str, Any]:
        """Send the disks in <uuid>_resize; progress is cast to the conductor.

        The send runs on its own (`ferry.compute.sending`): this call starts it,
        or joins the one already running for this migration and token, and
        answers `{"state": "running"}` if it is not done within `wait` seconds
        (None: wait for the end), so the conductor asks again.

        `rate_limit` caps this migration (bytes/s) on top of the host's own cap.
        Cut transfers are retried, each retry resuming from the destination's
        journal, until nothing has moved for `give_up` seconds: a long transfer
        that keeps moving is never given up on, an unreachable destination is.
        """
        out = await self.sends.join(
            migration_uuid, token, uuid,
            lambda: self._send(uuid, migration_uuid, address, token, names, shared,
                               rate_limit, give_up),
            wait)
        return {"state": "running"} if out is None else out

    async def _send(self, uuid: str, migration_uuid: str, address: str, token: str,
                    names: list[str], shared: bool, rate_limit: float | None,
                    give_up: float | None) -> dict[str, Any]:
        if shared:
            copy = asyncio.ensure_future(asyncio.to_thread(self.store.copy_local, uuid))
            try:
                await asyncio.shield(copy)
            except asyncio.CancelledError:
                # A thread cannot be stopped: whoever stops this send (a rollback
                # about to restore <uuid>_resize) waits until the copy is done.
                await asyncio.gather(copy, return_exceptions=True)
                raise
            return {"state": "done", "bytes_sent": 0, "seconds": 0.0, "files": {}}
        host, port = address.rsplit(":", 1)
        moved = _Moved()

        def report(p: Progress) -> None:
            moved.saw(p.done, p.bytes_sent)
            self._cast(self.bus.cast(CONDUCTOR_TOPIC, "report_progress", {
                "migration_uuid": migration_uuid, "done": p.done, "total": p.total,
                "rate": p.rate, "eta": p.eta,
                "files": {n: {"done": f.done, "total": f.total} for n, f in p.files.items()}}))

        send = asyncio.ensure_future(send_files(
            (host, int(port)), token, migration_uuid, self.store.resize_path(uuid), names,
            rate_limit=rate_limit or None, host_limiter=self.send_limiter,
            attempts=_ATTEMPTS_UNTIL_GIVE_UP if give_up else _ATTEMPTS,
            on_progress=report, progress_interval=self.progress_interval))
        try:
            while not send.done():
                await asyncio.wait({send}, timeout=self.progress_interval)
                if give_up and not send.done() and moved.idle() > give_up:
                    raise TransientTransferError(
                        f"transfer to {address} made no progress for {give_up:g}s "
                        f"(destination unreachable or stalled); giving up")
            result = send.result()
        finally:
            if not send.done():
                send.cancel()
                await asyncio.gather(send, return_exceptions=True)
        return {"state": "done", "bytes_sent": result.bytes_sent, "seconds": result.seconds,
                "attempts": result.attempts, "resumed_bytes": result.resumed_bytes,
                "files": {n: {"size": f.size, "allocated": f.allocated_bytes,
                              "digest": f.digest} for n, f in result.files.items()}}

    def _cast(self, coro: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: a task nobody holds may be collected before it runs.
        task = asyncio.get_running_loop().create_task(coro)
        self._casts.add(task)
        task.add_done_callback(self._casts.discard)

    # -- migration: destination finish ---------------------------------------

    async def prepare_migrated_instance(self, instance: dict[str, Any],
                                        image: dict[str, Any]) -> None:
        await self.images.ensure(image)
        if not (self.store.path(instance["uuid"]) / "disk").exists():
            raise FileNotFoundError(f"{self.host}: the migrated disk is not here")

    async def finish_migration(self, instance: dict[str, Any], image: dict[str, Any],
                               power_on: bool) -> int:
        await self.driver.finish_migration(spec_from(instance, image), power_on)
        return int(await self.driver.power_state(instance["uuid"]))

    async def confirm_migration(self, uuid: str) -> None:
        await self.driver.destroy(uuid)
        self.store.remove_resize(uuid)

    async def revert_migration(self, uuid: str, migration_uuid: str, shared: bool) -> None:
        """Destination side of a revert or rollback: drop the guest and its copy."""
        await self.driver.destroy(uuid)
        self.tokens.revoke(migration_uuid)
        # On shared storage <uuid> is the source's own path too: only remove it
        # when the source copy is safe in <uuid>_resize.
        if not shared or self.store.resize_path(uuid).exists():
            self.store.remove(uuid)

    async def finish_revert_migration(self, instance: dict[str, Any], image: dict[str, Any],
                                      power_on: bool) -> int:
        uuid = instance["uuid"]
        if self.store.resize_path(uuid).exists():
            self.store.restore_from_resize(uuid)
        await self.driver.finish_revert_migration(spec_from(instance, image), power_on)
        return int(await self.driver.power_state(uuid))

