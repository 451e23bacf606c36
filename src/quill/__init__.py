"""Quill: full-stack handwritten text recognition."""

__version__ = "0.1.0"
