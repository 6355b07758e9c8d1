"""Every RPC method, in one place: who serves it, call or cast, its timeout.

To add an RPC call: add an `RpcMethod` here, then a method of the same name on
the serving endpoint (`ferry.compute.manager.ComputeManager` for "compute",
`ferry.conductor.manager.ConductorEndpoint` for "conductor"). The bus refuses
methods that are not listed, and arguments that are not JSON.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RpcMethod:
    name: str
    server: str  # "compute" (topic compute.<host>) or "conductor"
    timeout: float  # seconds a `call` waits for the reply
    doc: str


_METHODS = [
    # compute hosts
    RpcMethod("spawn", "compute", 600, "ensure the base image, create the disk, boot"),
    RpcMethod("stop_instance", "compute", 180, "clean power off"),
    RpcMethod("start_instance", "compute", 120, "power on"),
    RpcMethod("delete_instance", "compute", 180, "destroy guest, remove dirs incl. _resize"),
    RpcMethod("console_output", "compute", 30, "the serial console text"),
    RpcMethod("power_state", "compute", 30, "current power state"),
    RpcMethod("host_resources", "compute", 30, "inventory and hypervisor facts"),
    RpcMethod("check_can_migrate_to", "compute", 600,
              "dest pre-flight: free disk, base image obtainable (fetched into the cache)"),
    RpcMethod("create_shared_probe", "compute", 30, "dest: create a probe file"),
    RpcMethod("check_shared_probe", "compute", 30, "source: is the dest's probe visible here?"),
    RpcMethod("remove_shared_probe", "compute", 30, "dest: remove the probe file"),
    RpcMethod("check_data_plane", "compute", 30, "source: can it reach the dest endpoint?"),
    RpcMethod("expect_transfer", "compute", 30, "dest: register a one-time transfer token"),
    RpcMethod("has_base", "compute", 30, "is this image's base in the host's cache?"),
    RpcMethod("expect_base", "compute", 30,
              "dest: accept a base image pushed by a peer (image service lost it)"),
    RpcMethod("send_base", "compute", 1800, "source: push a cached base image to a peer"),
    RpcMethod("power_off_for_migration", "compute", 300,
              "source: clean power off, rename dir to <uuid>_resize"),
    RpcMethod("send_disks", "compute", 300,
              "source: start or join the disks' verified send; answers within its `wait`"),
    RpcMethod("prepare_migrated_instance", "compute", 600,
              "dest: base image in cache, disks re-pointed, ports plugged"),
    RpcMethod("finish_migration", "compute", 300, "dest: define and start the guest"),
    RpcMethod("confirm_migration", "compute", 300, "source: remove _resize and the domain"),
    RpcMethod("revert_migration", "compute", 300, "dest: destroy the guest and its files"),
    RpcMethod("finish_revert_migration", "compute", 300,
              "source: restore <uuid>_resize and start the guest"),
    # conductor
    RpcMethod("migrate_server", "conductor", 30, "start a cold migration (cast)"),
    RpcMethod("confirm_migration_request", "conductor", 30, "user confirmed (cast)"),
    RpcMethod("revert_migration_request", "conductor", 30, "user reverted (cast)"),
    RpcMethod("build_server", "conductor", 30, "schedule and spawn a new server (cast)"),
    RpcMethod("delete_server", "conductor", 30, "delete a server everywhere (cast)"),
    RpcMethod("stop_server", "conductor", 30, "power a server off (cast)"),
    RpcMethod("start_server", "conductor", 30, "power a server on (cast)"),
    RpcMethod("report_state", "conductor", 30, "compute heartbeat with resources (cast)"),
    RpcMethod("report_progress", "conductor", 30, "transfer progress of a migration (cast)"),
]

CATALOGUE: dict[str, RpcMethod] = {m.name: m for m in _METHODS}


def compute_topic(host: str) -> str:
    return f"compute.{host}"


CONDUCTOR_TOPIC = "conductor"
