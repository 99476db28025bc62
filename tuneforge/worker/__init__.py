"""Job workers: claim jobs from the store's queue and run core functions, reporting events and checkpoints."""
