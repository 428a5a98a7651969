"""gcp backend (in progress)."""
