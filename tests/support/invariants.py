"""What must hold after anything, failures included (DESIGN.md section 5):
the server exists exactly once or is recoverable, its disks are intact on at
least one host, and allocations equal what it should hold."""

from __future__ import annotations

from sqlalchemy import select

from ferry.cmd.embedded import EmbeddedCloud
from ferry.compute.virt.driver import PowerState
from ferry.compute.virt.fake import DATA_BLOCK, DATA_OFFSETS, FakeDriver, _payload
from ferry.conductor.records import flavor_resources
from ferry.conductor.states import FINAL, State
from ferry.db.models import Flavor, Instance, Migration
from ferry.scheduler import placement


def disk_intact(path_dir: object, uuid: str) -> bool:
    from pathlib import Path

    disk = Path(str(path_dir)) / "disk"
    if not disk.exists():
        return False
    with open(disk, "rb") as f:
        for off in DATA_OFFSETS:
            f.seek(off)
            if f.read(DATA_BLOCK) != _payload(uuid):
                return False
    return True


async def check(cloud: EmbeddedCloud, uuid: str) -> None:
    async with cloud.sessions() as s:
        inst = (await s.execute(select(Instance).where(Instance.uuid == uuid))).scalar_one()
        flavor = await s.get(Flavor, inst.flavor_id)
        migs = list((await s.execute(select(Migration).where(
            Migration.instance_uuid == uuid))).scalars())
        assert flavor is not None
        inst_alloc = await placement.allocations_for(s, uuid)
        mig_alloc = {m.uuid: await placement.allocations_for(s, m.uuid) for m in migs}
        old_flavors = {m.uuid: await s.get(Flavor, m.old_instance_type_id or inst.flavor_id)
                       for m in migs}
    active = [m for m in migs if m.state not in FINAL]
    assert len(active) <= 1, "two unfinished migrations for one server"
    live = {c.host for c in cloud.computes if c.store.path(uuid).exists()}
    kept = {c.host for c in cloud.computes if c.store.resize_path(uuid).exists()}
    shared = cloud.cfg.shared_storage

    if active and State(active[0].state) == State.VERIFY:
        m = active[0]
        assert inst.vm_state == "resized" and inst.host == m.dest_compute
        if not shared:
            assert live == {m.dest_compute}, live
            assert kept == {m.source_compute}, kept
        dest = cloud.compute(m.dest_compute or "")
        src = cloud.compute(m.source_compute or "")
        assert disk_intact(dest.store.path(uuid), uuid)
        assert disk_intact(src.store.resize_path(uuid), uuid)
        assert inst_alloc == {m.dest_compute: flavor_resources(flavor)}
        old = old_flavors[m.uuid]
        assert old is not None
        assert mig_alloc[m.uuid] == {m.source_compute: flavor_resources(old)}
        return

    if inst.vm_state == "error":
        # Recoverable: some host still has an intact copy.
        copies = [c for c in cloud.computes
                  if disk_intact(c.store.path(uuid), uuid)
                  or disk_intact(c.store.resize_path(uuid), uuid)]
        assert copies, "server in ERROR and no intact copy anywhere"
        return
    assert not active, f"migration left in {active[0].state}" if active else ""
    assert inst.task_state is None
    assert inst.host is not None
    if not shared:
        assert live == {inst.host}, f"live copies on {live}, server on {inst.host}"
    assert kept == set(), f"stale _resize copies on {kept}"
    assert disk_intact(cloud.compute(inst.host).store.path(uuid), uuid)
    assert inst_alloc == {inst.host: flavor_resources(flavor)}, inst_alloc
    for m in migs:
        assert mig_alloc[m.uuid] == {}, f"migration {m.uuid} still holds {mig_alloc[m.uuid]}"
    driver = cloud.compute(inst.host).driver
    assert isinstance(driver, FakeDriver)
    want = PowerState.RUNNING if inst.vm_state == "active" else PowerState.SHUTDOWN
    assert await driver.power_state(uuid) == want
    assert inst.power_state == int(want)
    for c in cloud.computes:
        if c.host != inst.host:
            assert await c.driver.power_state(uuid) in (PowerState.NOSTATE,
                                                        PowerState.SHUTDOWN)


async def total_usage_matches(cloud: EmbeddedCloud) -> None:
    """Across the cloud: usage per host equals what live servers and migrations hold."""
    async with cloud.sessions() as s:
        usage = await placement.usages(s)
        expected: dict[str, dict[str, int]] = {}
        insts = (await s.execute(select(Instance).where(Instance.deleted.is_(False)))).scalars()
        for inst in insts:
            if inst.host is None:
                continue
            flavor = await s.get(Flavor, inst.flavor_id)
            assert flavor is not None
            for rc, v in flavor_resources(flavor).items():
                expected.setdefault(inst.host, {}).setdefault(rc, 0)
                expected[inst.host][rc] += v
        for m in (await s.execute(select(Migration).where(
                Migration.state == State.VERIFY.value))).scalars():
            old = await s.get(Flavor, m.old_instance_type_id)
            assert old is not None and m.source_compute
            for rc, v in flavor_resources(old).items():
                expected.setdefault(m.source_compute, {}).setdefault(rc, 0)
                expected[m.source_compute][rc] += v
    assert {h: {k: v for k, v in u.items() if v} for h, u in usage.items() if any(u.values())} \
        == {h: {k: v for k, v in u.items() if v} for h, u in expected.items()}
