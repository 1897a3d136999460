"""The prediction service: the promoted models behind an HTTP API (BentoML), and the same predictor
for files without a server."""
