"""Per-target training, evaluation, selection and model cards."""
