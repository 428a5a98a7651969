"""vsphere backend (in progress)."""
