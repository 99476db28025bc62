"""One module per console page; each has a `router`."""

from tuneforge.console.pages import datasets, evals, fine_tunes, logs, models, overview, playground, settings

ALL = [overview, logs, datasets, fine_tunes, evals, models, playground, settings]
