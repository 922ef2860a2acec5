"""The report: index.html of a run folder."""
