"""The offline example: corpora and a labelled task built from the Python standard library's own
text (`stdlib_text`, `stdlib_task`), the 10-minute demo (`demo`, `demo_budget`), the task-
distillation proof (`task_proof`) and a CLI that writes the data (`build_data`).

Run from the repository root: `python -m examples.stdlib.demo`.
"""
