"""The web console: server-rendered pages (Jinja2 templates, htmx for partial updates, a little plain JS for the
live charts and the playground) served by `tuneforge serve` at `/`, over the same store, job queue and engines as
the API. Pages call the store and job kinds as the API's routes do; nothing here is imported by the core."""

from tuneforge.console.app import install

__all__ = ["install"]
