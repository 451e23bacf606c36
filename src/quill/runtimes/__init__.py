"""Runtimes: run a staged model's files (ONNX Runtime, TorchScript, eager PyTorch).

``backends`` loads the runtime a :class:`~quill.staged_model.StagedModel` asks for, or
``auto``'s (ONNX Runtime unless TorchScript is clearly faster here), behind one
``decode(images, widths)`` interface; ``cache`` remembers the ``auto`` choice and compiled
language models between processes. Staging runs them for its parity check, inference for
every prediction: this package sits below both, and imports neither. Importing it loads
neither torch nor onnxruntime.
"""
