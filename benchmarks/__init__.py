"""The project's benchmarks: scripts that measure speed and memory and record the figures.

Run them from the repository root as modules, e.g. ``python -m benchmarks.bench_train list``; ``README.md`` in this
folder says what each one measures and where its results go, and ``python -m benchmarks.render_results`` renders
the tables of ``RESULTS.md`` from the stored result files. The ``eeve_sft`` package must be installed (``pip install -e .``).
"""
