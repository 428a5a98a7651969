"""digitalocean backend (in progress)."""
