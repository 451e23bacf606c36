"""The compiled parts of Quill: CTC beam search (``quill.models._ctc_beam``) and the ink map's
window medians and colour distances (``quill._paper``), in C.

Everything else is configured in pyproject.toml. Both extensions are optional: where no C
compiler is found (a slim container image), installing still succeeds and Quill runs their
Python and NumPy twins, with the same answers, slower (``quill.models.decoding``,
``quill.preprocess``). The flags keep the arithmetic exactly Python's: no fused
multiply-adds, no fast-math.
"""

from setuptools import Extension, setup

#: Compiler flags of both extensions.
FLAGS = ["-O2", "-std=c11", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension(
            "quill.models._ctc_beam",
            ["src/quill/models/_ctc_beam.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        # the ink map's window medians and colour distances (quill.preprocess), exact
        Extension("quill._paper", ["src/quill/_paper.c"], extra_compile_args=FLAGS, optional=True),
    ]
)
