"""azure backend (in progress)."""
