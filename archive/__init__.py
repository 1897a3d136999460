"""The PanDA archive as scoutless reads it: its schema, its sources and extraction into Parquet."""
