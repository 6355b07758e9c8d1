"""Nova-shaped JSON for servers, flavors and migrations, per microversion.

Each view emits exactly the keys Nova emits at the requested microversion,
because strict clients (tempest) reject unexpected keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from ferry.api.context import RequestContext
from ferry.db.models import Flavor, Instance, InstanceFault, Migration

# nova/api/openstack/common.py _STATE_MAP, the parts a cold migration meets.
_STATUS: dict[str, dict[str | None, str]] = {
    "active": {None: "ACTIVE", "resize_prep": "RESIZE", "resize_migrating": "RESIZE",
               "resize_migrated": "RESIZE", "resize_finish": "RESIZE",
               "resize_reverting": "REVERT_RESIZE", "powering-off": "ACTIVE",
               "deleting": "ACTIVE"},
    "stopped": {None: "SHUTOFF", "resize_prep": "RESIZE", "resize_migrating": "RESIZE",
                "resize_migrated": "RESIZE", "resize_finish": "RESIZE",
                "resize_reverting": "REVERT_RESIZE", "powering-on": "SHUTOFF"},
    "resized": {None: "VERIFY_RESIZE", "resize_reverting": "REVERT_RESIZE"},
    "building": {None: "BUILD", "scheduling": "BUILD", "spawning": "BUILD"},
    "error": {None: "ERROR"},
    "deleted": {None: "DELETED"},
}
_PROGRESS_STATUSES = {"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"}


def server_status(vm_state: str, task_state: str | None) -> str:
    states = _STATUS.get(vm_state, {})
    return states.get(task_state, states.get(None, "UNKNOWN"))


def iso_z(t: dt.datetime | None) -> str | None:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def iso_us(t: dt.datetime | None) -> str | None:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") if t else None


def host_id(project_id: str, host: str | None) -> str:
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def link(base: str, kind: str, ident: str) -> list[dict[str, str]]:
    root = base.rstrip("/")
    return [{"rel": "self", "href": f"{root}/v2.1/{kind}/{ident}"},
            {"rel": "bookmark", "href": f"{root}/{kind}/{ident}"}]


def flavor_view(f: Flavor, ctx: RequestContext, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f.flavorid, "name": f.name, "ram": f.memory_mb, "vcpus": f.vcpus,
        "disk": f.root_gb, "links": link(base, "flavors", f.flavorid),
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral_gb,
        "os-flavor-access:is_public": f.is_public,
        "OS-FLV-DISABLED:disabled": f.disabled, "rxtx_factor": f.rxtx_factor,
        "swap": f.swap if (f.swap or ctx.version >= (2, 75)) else "",
    }
    if ctx.version >= (2, 55):
        out["description"] = None
    if ctx.version >= (2, 61) and ctx.can("os_compute_api:os-flavor-extra-specs:index"):
        out["extra_specs"] = dict(f.extra_specs or {})
    return out


def server_view(inst: Instance, flavor: Flavor, ctx: RequestContext, base: str,
                fault: InstanceFault | None = None) -> dict[str, Any]:
    status = server_status(inst.vm_state, inst.task_state)
    owner = {"project_id": inst.project_id, "user_id": inst.user_id}
    if ctx.version >= (2, 47):
        flavor_out: dict[str, Any] = {
            "original_name": flavor.name, "ram": flavor.memory_mb, "vcpus": flavor.vcpus,
            "disk": flavor.root_gb, "ephemeral": flavor.ephemeral_gb, "swap": flavor.swap}
        if ctx.can("os_compute_api:servers:show:flavor-extra-specs", owner):
            flavor_out["extra_specs"] = dict(flavor.extra_specs or {})
    else:
        flavor_out = {"id": flavor.flavorid, "links": [link(base, "flavors", flavor.flavorid)[1]]}
    out: dict[str, Any] = {
        "id": inst.uuid, "name": inst.display_name, "status": status,
        "tenant_id": inst.project_id, "user_id": inst.user_id,
        "metadata": dict(inst.metadata_ or {}), "hostId": host_id(inst.project_id, inst.host),
        "image": {"id": inst.image_ref, "links": [link(base, "images", inst.image_ref)[1]]},
        "flavor": flavor_out, "created": iso_z(inst.created_at),
        "updated": iso_z(inst.updated_at or inst.created_at), "addresses": {},
        "links": link(base, "servers", inst.uuid), "accessIPv4": "", "accessIPv6": "",
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-STS:task_state": inst.task_state, "OS-EXT-STS:vm_state": inst.vm_state,
        "OS-EXT-STS:power_state": inst.power_state,
        "OS-EXT-AZ:availability_zone": inst.availability_zone or "nova",
        "OS-SRV-USG:launched_at": iso_us(inst.launched_at),
        "OS-SRV-USG:terminated_at": iso_us(inst.terminated_at),
        "key_name": None, "config_drive": "", "security_groups": [{"name": "default"}],
        "os-extended-volumes:volumes_attached": [],
    }
    if status in _PROGRESS_STATUSES:
        out["progress"] = inst.progress
    if ctx.can("os_compute_api:os-extended-server-attributes", owner):
        out["OS-EXT-SRV-ATTR:host"] = inst.host
        out["OS-EXT-SRV-ATTR:hypervisor_hostname"] = inst.node
        out["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{inst.id:08x}"
        if ctx.version >= (2, 3):
            out.update({"OS-EXT-SRV-ATTR:hostname": inst.display_name,
                        "OS-EXT-SRV-ATTR:reservation_id": f"r-{inst.id:08x}",
                        "OS-EXT-SRV-ATTR:launch_index": 0,
                        "OS-EXT-SRV-ATTR:kernel_id": "", "OS-EXT-SRV-ATTR:ramdisk_id": "",
                        "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                        "OS-EXT-SRV-ATTR:user_data": None})
    if ctx.version >= (2, 3):
        out["os-extended-volumes:volumes_attached"] = []
    if ctx.version >= (2, 9):
        out["locked"] = inst.locked
    if ctx.version >= (2, 16) and ctx.can("os_compute_api:servers:show:host_status", owner):
        out["host_status"] = "UP" if inst.host else ""
    if ctx.version >= (2, 19):
        out["description"] = None
    if ctx.version >= (2, 26):
        out["tags"] = []
    if ctx.version >= (2, 63):
        out["trusted_image_certificates"] = None
    if ctx.version >= (2, 73):
        out["locked_reason"] = None
    if fault is not None and status in ("ERROR", "DELETED"):
        f: dict[str, Any] = {"code": fault.code, "created": iso_z(fault.created_at),
                             "message": fault.message}
        if ctx.is_admin or fault.code != 500:
            f["details"] = fault.details or ""
        out["fault"] = f
    return out


def migration_view(m: Migration, ctx: RequestContext, show_host: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id, "status": m.status, "instance_uuid": m.instance_uuid,
        "source_node": m.source_node if show_host else None,
        "source_compute": m.source_compute if show_host else None,
        "dest_node": m.dest_node if show_host else None,
        "dest_compute": m.dest_compute if show_host else None,
        "dest_host": (m.dest_host or "").split(":")[0] or None if show_host else None,
        "old_instance_type_id": m.old_instance_type_id,
        "new_instance_type_id": m.new_instance_type_id,
        "created_at": iso_us(m.created_at), "updated_at": iso_us(m.updated_at),
    }
    if ctx.version >= (2, 23):
        out["migration_type"] = m.migration_type
    if ctx.version >= (2, 59):
        out["uuid"] = m.uuid
    if ctx.version >= (2, 80):
        out["user_id"] = m.user_id
        out["project_id"] = m.project_id
    return out


def ferry_migration_view(m: Migration) -> dict[str, Any]:
    """Ferry's own view: the phase, step log, bytes, rate, ETA and downtime.

    Transfer progress: `bytes_done`/`bytes_total` (allocated bytes verified on
    the destination), `rate` (bytes/s over the last seconds), `eta` (seconds,
    null while unknown), `percent`, `files` per disk, `progress_at` (when the
    source last reported), and `max_bandwidth` (the migration's cap, bytes/s).
    Nova's views (/os-migrations) keep Nova's keys only.
    """
    total, done = m.bytes_total or 0, m.bytes_done or 0
    return {
        "uuid": m.uuid, "id": m.id, "instance_uuid": m.instance_uuid, "state": m.state,
        "status": m.status, "phase": m.phase, "migration_type": m.migration_type,
        "source_compute": m.source_compute, "dest_compute": m.dest_compute,
        "dest_host": m.dest_host, "shared_storage": m.shared_storage,
        "bytes_total": total, "bytes_done": done,
        "percent": round(100.0 * done / total, 1) if total else None,
        "rate": m.transfer_rate, "eta": m.transfer_eta,
        "files": dict(m.transfer_files or {}), "progress_at": iso_us(m.progress_at),
        "max_bandwidth": m.max_bandwidth,
        "downtime_s": m.downtime_s, "error": m.error, "steps": list(m.steps or []),
        "created_at": iso_us(m.created_at), "updated_at": iso_us(m.updated_at),
    }
