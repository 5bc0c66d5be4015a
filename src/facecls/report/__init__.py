"""The course report: its sections, running them, and writing report.md."""
