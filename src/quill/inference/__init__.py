"""Quill's inference layer."""
