"""State: SQLAlchemy tables, Alembic migrations, artifact folders, and the job queue (a service layer).

The core (data, models, training, inference, evals) never imports this package; the worker and the
server do.
"""
