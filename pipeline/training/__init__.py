"""Training stages: train (one registered model and seed -> models/<name>/seed-<seed>) and evaluate (that run on
the official test set -> metrics/<name>/seed-<seed>.*)."""
