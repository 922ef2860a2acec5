"""The run folder: its schema, names, lock, journal, writer and reader (torch-free where it reads)."""
