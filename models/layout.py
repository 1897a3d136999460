"""The layout of a promoted model's folder, shared by selection (which writes it) and serving (which
reads it): the candidate's files, the history snapshot its features need, and promotion.json."""

MODEL_DIR = "model"
PROMOTION_FILE = "promotion.json"
SNAPSHOT_FILE = "history_snapshot.parquet"
