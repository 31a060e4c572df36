"""Operational policies shared by the assets: retries and GPU placement."""

from __future__ import annotations

import dagster as dg

# Transient failures (a filesystem hiccup, an S3 throttle, a preempted GPU
# node) are retried with exponential backoff and jitter so that many retrying
# runs do not stampede the same resource in lockstep.
IO_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
GPU_RETRY = dg.RetryPolicy(
    max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

GPU_POOL = "gpu"

DEDUP_POOL = "dedup_index"
"""clean_shards steps, which read and write the one dedup index, run one at a time."""

# Asks the Kubernetes run launcher / executor (dagster-k8s) for one GPU for the
# step's pod; ignored by the in-process and multiprocess executors.
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
        }
    }
}
