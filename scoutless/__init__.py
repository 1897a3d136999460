"""scoutless: predicts the resources a PanDA task will need before its scout jobs run."""

__version__ = "0.1.0"
