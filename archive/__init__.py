"""The PanDA archive: its schema, extraction into Parquet, and a simulator of it."""
