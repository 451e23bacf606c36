"""Plain nn.Module recognition models and their decoders."""
