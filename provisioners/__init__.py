"""SSH provisioning layer (in progress)."""
