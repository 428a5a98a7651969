"""local backend (in progress)."""
