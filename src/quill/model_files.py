"""The names of a staged model folder's files, defined once.

Every layer that touches a staged model names its files through these constants: training
(``--init-from`` a staged model), the ONNX exporter, the runtimes, staging (which writes the
folder), inference, serving and benchmarks. The folder's metadata and version are
:class:`quill.staged_model.StagedModel`'s. This module imports nothing, so a command-line
module can name the files without loading anything.
"""

#: The metadata (:class:`quill.staged_model.StagedModel`).
METADATA_FILE = "quill-model.json"
#: A CTC model's one graph ``(images, widths) -> (log_probs, lengths)``.
ONNX_FILE = "model.onnx"
#: The same graph with int8 weights in its matrix products (``quill model quantize``).
ONNX_INT8_FILE = "model-int8.onnx"
#: A seq2seq model's two graphs: the encoder and one cached decoder step.
ENCODER_FILE = "encoder.onnx"
DECODER_STEP_FILE = "decoder_step.onnx"
#: TorchScript: the torchscript runtime, the eager runtime's weights, fine-tuning's start.
TORCHSCRIPT_FILE = "model.pt"
#: The character language model a CTC model's decoding may name.
LM_FILE = "lm.json"
#: With other languages: the small LM that recognises the main language's lines.
IDENTIFIER_FILE = "identify.json"
#: The model card (``quill.staging.model_card``).
MODEL_CARD_FILE = "MODEL_CARD.md"
