"""nginx plugin module."""
