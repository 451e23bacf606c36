"""Quill's bench layer."""
