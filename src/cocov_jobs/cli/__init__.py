"""The ``cocov-jobs`` command line: :mod:`~cocov_jobs.cli.main` holds the commands."""
