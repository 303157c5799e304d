#!/bin/sh
# The test agent: a stand-in for a workspace runtime whose behaviour the test
# chooses by env.
#   AGENT_READY_AFTER=N   serve HTTP on :8000 (and so pass the healthcheck)
#                         only after N seconds [0]
#   AGENT_NEVER_READY=1   never serve, so the healthcheck always fails
#   AGENT_EXIT_AFTER=N    exit with AGENT_EXIT_CODE [1] after N seconds
#   AGENT_IGNORE_TERM=1   ignore SIGTERM (docker stop must escalate to KILL)
# It always writes its environment to /tmp/agent.env for tests to read.

env > /tmp/agent.env 2>/dev/null

if [ "${AGENT_IGNORE_TERM:-0}" = 1 ]; then
  trap '' TERM
else
  trap 'kill $server 2>/dev/null; exit 0' TERM INT
fi

server=
if [ "${AGENT_NEVER_READY:-0}" != 1 ]; then
  (
    sleep "${AGENT_READY_AFTER:-0}"
    exec httpd -f -p 8000 -h /www
  ) &
  server=$!
fi

if [ -n "${AGENT_EXIT_AFTER:-}" ]; then
  sleep "$AGENT_EXIT_AFTER" &
  wait $!
  exit "${AGENT_EXIT_CODE:-1}"
fi

# Wait in short, interruptible steps so the TERM trap runs promptly.
while :; do
  sleep 1 &
  wait $!
done
