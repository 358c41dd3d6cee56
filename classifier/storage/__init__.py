"""Storage: what takes space, soft deletion of runs, dataset versions and model versions, the purge."""
