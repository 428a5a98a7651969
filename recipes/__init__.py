"""Recipes that turn a VM into a working service over SSH."""
