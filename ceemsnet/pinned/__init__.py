"""State that outlives the exporter: the pin directory's layout, the one
fresh/adopt/swap/migrate sequence every subsystem opens through, and the
ledger of retired totals kept in BPF maps beside the counters."""
