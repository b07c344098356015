"""The node's HTTP side: worklist pages, REST API, health, metrics, and the workers' endpoints."""
