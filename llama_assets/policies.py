"""Operational policies shared by the assets: retries, pools and GPU placement."""

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

# Kubernetes placement of the GPU assets (fine-tune, eval, embeddings), read by
# dagster-k8s's k8s_job_executor from the `dagster-k8s/config` op tag (deep-merged
# over the executor's CPU defaults, llama_assets/executors.py) and ignored by the
# in-process and multiprocess executors. The node label is the one NVIDIA's GPU
# Feature Discovery (GPU Operator) sets on GPU nodes; the toleration admits the
# `nvidia.com/gpu` taint that GKE and EKS GPU node pools carry, whatever its value.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def gpu_op_tags(gpus: int = 1) -> dict:
    """The op tags that give a step's pod `gpus` GPUs on a GPU node."""
    count = str(gpus)
    return {
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "requests": {"nvidia.com/gpu": count},
                    "limits": {"nvidia.com/gpu": count},
                }
            },
            "pod_spec_config": {
                "node_selector": GPU_NODE_SELECTOR,
                "tolerations": GPU_TOLERATIONS,
            },
        }
    }


GPU_OP_TAGS = gpu_op_tags(1)
