"""The command line: one flag table for every entry point."""
