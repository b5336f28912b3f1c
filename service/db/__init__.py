"""Persistence: SQLAlchemy 2 models, engine/session factory and repositories. Schema changes are Alembic
migrations (``migrations/``); the app never calls ``create_all`` on a real database."""
