"""The compiled part of Quill: CTC beam search in C (``quill.models._ctc_beam``).

Everything else is configured in pyproject.toml. The extension is optional: where no C
compiler is found (a slim container image), installing still succeeds and beam search runs
in Python, with the same answers, slower (see ``quill.models.decoding``). The flags keep
the arithmetic exactly Python's: no fused multiply-adds, no fast-math.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "quill.models._ctc_beam",
            ["src/quill/models/_ctc_beam.c"],
            extra_compile_args=["-O2", "-std=c11", "-ffp-contract=off", "-fno-fast-math"],
            optional=True,
        )
    ]
)
