"""Quill's serving layer."""
