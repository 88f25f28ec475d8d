"""Celery workers: the job registry, the job lifecycle, one thin task per job kind, the sandbox."""
