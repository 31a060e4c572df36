"""Shared building blocks every stage imports: the data root and its layout,
atomic writes, checksummed shard sets, reject records, per-source policy and
the worker-process pool.

Nothing here imports Dagster or a stage package, so a worker process or a
torchrun rank that needs only these starts fast, and the layers read top-down:
``base`` <- ``ingest`` <- ``curate`` <- ``retrieval`` <- ``training`` <-
``deployment``, with ``tables``/``partitions``/``policies`` as the Dagster
plumbing the assets share.
"""
