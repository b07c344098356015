"""The node's web side: worklist and study pages, REST API, health, metrics, login (see app.py)."""
