"""Quill's monitoring layer."""
