"""Drift monitoring: Evidently reports of the newest tasks against the promoted models' training window,
and the rule that says when to retrain."""
