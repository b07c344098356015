"""The node's web side: worklist and study pages, REST API, health, metrics, login (see app.py), and
the endpoints stateless workers call (worker_api.py)."""
