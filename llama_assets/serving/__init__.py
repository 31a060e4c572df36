"""Serving: the CPU backend, the gateway in front of the backends, and the routing state
the gateway follows. Long-running services, not assets; nothing here imports Dagster."""
