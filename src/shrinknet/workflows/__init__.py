"""What the CLI and ``reproduce`` run, end to end; raises InputError, never a click error."""
