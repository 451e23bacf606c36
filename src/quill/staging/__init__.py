"""Staging: a training checkpoint becomes a self-contained, registered model directory.

Training's ``checkpoint`` module finds and rebuilds it, ``export`` writes ONNX and TorchScript,
``parity`` refuses exports that read differently, ``model_card`` describes it, ``registry``
records it in MLflow with its lineage, ``stage`` runs the steps; ``smoke`` makes a tiny real
one.
"""
