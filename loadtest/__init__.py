"""The locust load test (locustfile.py) and what `make loadtest` runs (run.py)."""
