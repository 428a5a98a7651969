"""PostgreSQL recipe (in progress)."""
