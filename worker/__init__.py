"""
lead relay: delivers leads to lead platforms through per-destination Celery queues.

Importing this package builds the Celery application object and nothing else:
no settings file is read and no connection is opened until Celery configures
itself (`celery -A worker worker`, `celery -A worker beat`).
"""

from worker.app import app

__all__ = ["__version__", "app"]
__version__ = "0.1.0"
