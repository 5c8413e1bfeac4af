"""What every layer shares: flag value types, durations and times, and the
metric family model with its text rendering."""
