#!/bin/sh
# EpilogSlurmctld for ceemsnet: writes each finished job's network and file IO totals into
# its SLURM accounting record (`ceemsnet record`, docs/reports.md ("The job's record in SLURM")). slurmctld runs it as
# SlurmUser on its own host, with SLURM_JOB_ID set, once the job has ended.
#
# Settings (shell variables) in /etc/default/ceemsnet-record, or the file named by
# CEEMSNET_RECORD_DEFAULTS:
#   CEEMSNET_PROMETHEUS   the Prometheus server that scrapes the nodes (required; unset: do nothing)
#   CEEMSNET_RECORD_ARGS  more flags, e.g. "--field=SystemComment --timeout=180s --per-node"
#   CEEMSNET              the ceemsnet program (default: ceemsnet on PATH, else /usr/bin/ceemsnet)
#   CEEMSNET_RECORD_LOG   a file to append the command's messages to (default: syslog via logger)
#
# It always exits 0: a record that could not be written is logged, and the job is not held.
# The wait (at most --timeout, default 120s) runs in the epilog: slurmctld keeps the job
# COMPLETING meanwhile, so keep --timeout a little above Prometheus' scrape interval.
defaults=${CEEMSNET_RECORD_DEFAULTS:-/etc/default/ceemsnet-record}
# shellcheck disable=SC1090
[ -r "$defaults" ] && . "$defaults"
[ -n "${CEEMSNET_PROMETHEUS:-}" ] || exit 0
[ -n "${SLURM_JOB_ID:-}" ] || exit 0
PATH=$PATH:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export PATH
prog=${CEEMSNET:-$(command -v ceemsnet || echo /usr/bin/ceemsnet)}
# shellcheck disable=SC2086
out=$("$prog" record --prometheus="$CEEMSNET_PROMETHEUS" ${CEEMSNET_RECORD_ARGS:-} "$SLURM_JOB_ID" 2>&1)
rc=$?
msg="job $SLURM_JOB_ID: exit $rc${out:+: $(printf '%s' "$out" | tr '\n' ' ')}"
if [ -n "${CEEMSNET_RECORD_LOG:-}" ]; then
    printf '%s %s\n' "$(date '+%Y-%m-%dT%H:%M:%S')" "$msg" >>"$CEEMSNET_RECORD_LOG"
elif command -v logger >/dev/null 2>&1; then
    logger -t ceemsnet-record -- "$msg"
else
    printf '%s\n' "$msg" >&2
fi
exit 0
