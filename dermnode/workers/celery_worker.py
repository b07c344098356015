"""``python -m dermnode.workers.celery_worker [celery worker options]``: a worker of the node's Celery app.

It is named after its own process, ``dermnode-worker-<pid>@<host>`` (celery_app.worker_node_name),
so that two workers on one host never share a name. The embedded queue starts its worker this way,
with the settings file named by ``DERMNODE_WORKER_SETTINGS``.
"""

from __future__ import annotations

import sys

from dermnode.workers import celery_app

if __name__ == "__main__":
    celery_app.app.worker_main(["worker", *sys.argv[1:], "--hostname", celery_app.worker_node_name()])
