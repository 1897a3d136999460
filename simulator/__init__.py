"""A simulated PanDA archive: one world of tasks and jobs written in PanDA's schema (the embedded default)."""
