"""Run orchestration: config, CLI, the Ray Data DAG, publishing and the run summary."""

__version__ = "0.1.0"
