"""Data sets: built-in benchmarks and the user's own files, read with bounded memory."""
