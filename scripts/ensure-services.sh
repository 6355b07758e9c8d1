#!/usr/bin/env bash
# The integration tests use the machine's PostgreSQL (127.0.0.1:5432) and
# RabbitMQ (127.0.0.1:5672). Start them when they are not answering (as root),
# otherwise say what is missing.
set -uo pipefail
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_up() { for _ in $(seq 1 120); do up "$1" && return 0; sleep 0.5; done; return 1; }

if ! up 5432; then
  if [ "$(id -u)" -eq 0 ] && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  wait_up 5432 || { echo "PostgreSQL is not answering on 127.0.0.1:5432 (install postgresql and start it)" >&2; exit 1; }
fi
if ! up 5672; then
  if [ "$(id -u)" -eq 0 ] && command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  wait_up 5672 || { echo "RabbitMQ is not answering on 127.0.0.1:5672 (install rabbitmq-server and start it)" >&2; exit 1; }
fi
