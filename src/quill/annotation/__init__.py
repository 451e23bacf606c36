"""Quill's annotation layer."""
