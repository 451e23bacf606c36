"""Quill's training layer."""
