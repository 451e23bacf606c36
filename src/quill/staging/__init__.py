"""Quill's staging layer."""
