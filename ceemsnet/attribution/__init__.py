"""Whose bytes they are: cgroup ids to paths (and the watcher that sees new
cgroups), workloads (SLURM jobs, systemd units, pods), SLURM's path grammar
and facts, and the lifecycle of cgroups that go away."""
