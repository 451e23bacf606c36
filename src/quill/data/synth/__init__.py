"""Synthetic handwriting: fonts, corpus, renderer and the parallel generator."""
