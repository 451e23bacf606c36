"""Staging: a training checkpoint becomes a self-contained, registered model directory.

Training's ``checkpoint`` module finds and rebuilds it, ``export`` writes ONNX and TorchScript
(through :mod:`quill.models.onnx_export`), ``parity`` refuses exports that read differently
(running them through :mod:`quill.runtimes`), ``model_card`` describes it, ``stage`` runs the
steps and writes the folder (:class:`quill.staged_model.StagedModel`), ``registry`` records it
in MLflow with its lineage, ``promotion`` gates the champion alias on a report card; ``smoke``
makes a tiny real one.
"""
