"""
Celery plumbing: the app (`app.py`), the tasks (`tasks.py`), beat's schedule
(`beat.py`), the broker transport that rides out a Redis outage
(`broker.py`) and Flower's settings (`flower.py`).

Importing this package opens nothing; `worker.runtime.app` builds the Celery
application object.
"""
