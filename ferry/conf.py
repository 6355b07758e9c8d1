"""Ferry's settings, with Nova's option names and defaults where Nova has one.

Every service reads the same `Settings`; `ferry up` fills it from flags, the
cluster services (later) from a TOML file with environment overrides.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    # [DEFAULT]shutdown_timeout and [compute]shutdown_retry_interval
    shutdown_timeout: float = 60.0
    shutdown_retry_interval: float = 10.0
    # [DEFAULT]resize_confirm_window: seconds before auto-confirm, 0 = never
    resize_confirm_window: float = 0.0
    # [DEFAULT]service_down_time and report_interval
    service_down_time: float = 60.0
    report_interval: float = 10.0
    # [scheduler]max_attempts: the chosen host plus alternates
    max_attempts: int = 3
    # placement initial allocation ratios and reserved host memory (Nova's defaults)
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_host_memory_mb: int = 512
    # lifetime of a data-plane token (a resumed transfer renews it)
    transfer_token_ttl: float = 900.0
    # seconds a disk transfer may go without moving a byte (the destination is
    # unreachable, its agent down) while it retries and resumes, before the
    # migration is rolled back; a transfer that keeps moving is never cut short
    transfer_give_up_s: float = 600.0
    # how long one send_disks call waits for the transfer before answering
    # "running" (the conductor then asks again): a transfer of hours never holds
    # one RPC, or a broker delivery past RabbitMQ's consumer_timeout
    transfer_poll_s: float = 60.0
    # default cap per migration in bytes/s when the request names none
    # ("ferry:max_bandwidth"); 0 = none. Accepts "50M"-style values in TOML/env.
    transfer_max_bandwidth: float = 0.0
    # per compute host: the most it sends, and the most it receives, in total
    # over all its transfers (bytes/s); 0 = unlimited. Set it in each host's file.
    host_max_bandwidth: float = 0.0
    # how long a rollback waits for the destination's clean-up before it goes on
    # (the clean-up stays queued for the host and runs when it is back)
    rollback_dest_timeout: float = 60.0
    # how often the conductor looks for migrations to auto-confirm
    periodic_interval: float = 2.0
    # attempts at rolling a failed migration back before the server is set ERROR
    rollback_attempts: int = 3
    # conductor leases on migrations: lifetime, and how often they are renewed
    conductor_lease_seconds: float = 30.0
    lease_renew_interval: float = 10.0
    # seconds per backoff unit between retries (2, 4, 8... units)
    retry_unit: float = 1.0
    # migrations one conductor drives at once; the rest wait in order, unowned
    # (0 = no limit). Each step checks out connections from the conductor's pool
    # of 10 + 20: 25 leaves room for lease renewal, recovery and host reports
    # (the scale benchmark: 500 at once failed 63 %, 25 at a time none).
    max_migrations_in_flight: int = 25
