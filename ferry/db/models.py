"""SQLAlchemy models: the cloud's state, owned by the API and the conductor.

Compute hosts never import this package (they hold no database credentials).
To add a table: add a model here, then `alembic revision` a migration in
`ferry/db/migrations/versions/` (the same migration serves SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Timestamps:
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, onupdate=utcnow)


class Service(Timestamps, Base):
    """A running service (ferry-compute, ferry-conductor), as os-services shows it."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("host", "binary"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(64))
    topic: Mapped[str] = mapped_column(String(255))
    zone: Mapped[str] = mapped_column(String(255), default="nova")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    forced_down: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_up: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # host:port of the data-plane (transfer) endpoint; host part doubles as dest_host IP.
    data_address: Mapped[str] = mapped_column(String(255), default="")
    hypervisor_type: Mapped[str] = mapped_column(String(64), default="")
    hypervisor_version: Mapped[int] = mapped_column(Integer, default=0)


class ResourceProvider(Base):
    __tablename__ = "resource_providers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)


class Inventory(Base):
    __tablename__ = "inventories"
    __table_args__ = (UniqueConstraint("provider_id", "resource_class"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("resource_providers.id"))
    resource_class: Mapped[str] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    allocation_ratio: Mapped[float] = mapped_column(Float, default=1.0)


class Consumer(Base):
    __tablename__ = "consumers"
    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    project_id: Mapped[str] = mapped_column(String(255), default="")
    user_id: Mapped[str] = mapped_column(String(255), default="")


class Allocation(Base):
    __tablename__ = "allocations"
    __table_args__ = (UniqueConstraint("provider_id", "consumer_id", "resource_class"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("resource_providers.id"), index=True)
    consumer_id: Mapped[str] = mapped_column(String(36), index=True)
    resource_class: Mapped[str] = mapped_column(String(64))
    used: Mapped[int] = mapped_column(Integer)


class Flavor(Timestamps, Base):
    __tablename__ = "flavors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flavorid: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    root_gb: Mapped[int] = mapped_column(Integer)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, default=0)
    swap: Mapped[int] = mapped_column(Integer, default=0)
    rxtx_factor: Mapped[float] = mapped_column(Float, default=1.0)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    extra_specs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Image(Timestamps, Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(32), default="queued")
    disk_format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    container_format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    virtual_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(32), nullable=True)
    os_hash_algo: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_hash_value: Mapped[str | None] = mapped_column(String(128), nullable=True)
    visibility: Mapped[str] = mapped_column(String(32), default="shared")
    owner: Mapped[str] = mapped_column(String(255), default="")
    min_disk: Mapped[int] = mapped_column(Integer, default=0)
    min_ram: Mapped[int] = mapped_column(Integer, default=0)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Instance(Timestamps, Base):
    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    display_name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    node: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vm_state: Mapped[str] = mapped_column(String(32))
    task_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    power_state: Mapped[int] = mapped_column(Integer, default=0)
    old_vm_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    flavor_id: Mapped[int] = mapped_column(ForeignKey("flavors.id"))
    old_flavor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    new_flavor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_ref: Mapped[str] = mapped_column(String(36))
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    launched_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    terminated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)


class Migration(Timestamps, Base):
    """Nova's migration record plus Ferry's state, phase, step log and downtime."""

    __tablename__ = "migrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    migration_type: Mapped[str] = mapped_column(String(32), default="migration")
    # Ferry's state machine state (ferry.conductor.states); `status` is Nova's view of it.
    state: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(32))
    phase: Mapped[str] = mapped_column(String(32))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    source_compute: Mapped[str | None] = mapped_column(String(255), nullable=True)
    source_node: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dest_compute: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dest_node: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dest_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    requested_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    old_instance_type_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    new_instance_type_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    old_vm_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    user_id: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(String(255), default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")
    # Hosts already tried (alternates are popped from `alternates`).
    tried_hosts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    alternates: Mapped[list[Any]] = mapped_column(JSON, default=list)
    shared_storage: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    steps: Mapped[list[Any]] = mapped_column(JSON, default=list)
    disk_info: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Transfer progress, written by the conductor from the source's reports (at
    # least once a second while TRANSFERRING): allocated bytes verified on the
    # destination out of the total, the rate over the last seconds, the ETA,
    # and the same per disk ({name: {"done", "total"}}). BigInteger: disks pass 2 GiB.
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    transfer_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    transfer_eta: Mapped[float | None] = mapped_column(Float, nullable=True)
    transfer_files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # Per-migration bandwidth cap (bytes/s) from the request ("ferry:max_bandwidth")
    # or Settings.transfer_max_bandwidth; None = only the hosts' own caps.
    max_bandwidth: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The data-plane token of this migration's disk transfer, kept while
    # TRANSFERRING so a resumed step presents the same grant (the destination
    # keeps the partial files and journal of a known grant). Never shown by the API.
    transfer_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    powered_off_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    downtime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Conductor ownership (lease) so a restarted or second conductor can take over.
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class InstanceAction(Base):
    __tablename__ = "instance_actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    start_time: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finish_time: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    message: Mapped[str | None] = mapped_column(String(255), nullable=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class InstanceActionEvent(Base):
    __tablename__ = "instance_action_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("instance_actions.id"), index=True)
    event: Mapped[str] = mapped_column(String(255))
    start_time: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finish_time: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    result: Mapped[str | None] = mapped_column(String(32), nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    details: Mapped[str | None] = mapped_column(Text, nullable=True)


class InstanceFault(Base):
    __tablename__ = "instance_faults"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    code: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(String(255))
    details: Mapped[str | None] = mapped_column(Text, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
import ferry.db.identity_models  # noqa: E402, F401  (identity tables share Base)
