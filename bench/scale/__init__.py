"""Scale, simulated (issue 5): 1,000 compute hosts, 10,000 servers, PostgreSQL.

    .venv/bin/python -m bench.scale                 # the full run (a few minutes)
    .venv/bin/python -m bench.scale --hosts 100 --servers 1000 --migrations 50   # quick

What runs, in one process, on a throw-away PostgreSQL database:

* The control plane as deployed: the real API app (ASGI, driven by httpx, no
  sockets, insecure no-auth), one real `ConductorEndpoint` (runner, scheduler,
  placement, leases, periodic jobs), on the in-process `MemoryBus` (JSON
  encoded, one task per message, as a broker would deliver).
* 1,000 real `ComputeManager`s, each with a `FakeDriver` (mixed host sizes),
  its own `TransferServer` on 127.0.0.1 and a heartbeat every
  `report_interval`; they register through `ConductorEndpoint.report_state`
  when they start, exactly as `ferry serve compute` does. 1 % of the hosts are
  then stopped (reported down) and 1 % disabled, so the filters have work.
* 10,000 servers. The first `--real-fill` of them are placed through
  `select_destinations` + `placement.claim` in the conductor's own
  transaction shape (what `ferry.conductor.servers.build` does); the rest are
  placed by the same filter and weigher functions (`ferry.scheduler.filters`,
  `.weighers`) over an in-memory copy of the host states and written in bulk
  with the rows `claim` writes (consumer + one allocation per class). Placing
  all 10,000 through `select_destinations` would take several minutes more
  and measure nothing the decision timings below do not.
  Only the servers that will move get a real (sparse) disk on their host.
* Scheduler decision time: `--decisions` calls of `select_destinations` on the
  full cluster with the conductor's host-state cache (each claim committed,
  then given back, so the cluster stays the same and the next decision finds
  one provider changed), with a per-phase breakdown and a cProfile of the
  decision, first with heartbeats paused, then with all hosts heartbeating;
  and the conductor's own decisions during the migrations, with the event
  loop's lag meanwhile.
* 500 concurrent cold migrations: `POST /servers/{id}/action {"migrate"}` for
  all of them at once, through every real step (pre-flight, shared-storage
  probe, power-off, the disks over the real data plane between two
  `TransferServer`s, finish), then `confirmResize` for all. Allocations are
  checked for drift with every migration waiting in VERIFY_RESIZE and again
  after confirming: per provider, the sum of allocations must equal what the
  servers (and the migrations holding their source side) should hold.

Everything shares one event loop (one core); PostgreSQL has the other core.
A real deployment spreads API, conductors and computes over processes and
machines, so the throughput here is a floor, not a ceiling.
"""
