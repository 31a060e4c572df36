"""Which executor runs a run's steps: `LLAMA_EXECUTOR`, the default unchanged.

- unset or `default`: Dagster's default executor (a process per step, or the
  run worker's own process for a single step), as everywhere before.
- `in_process`: every step in the run worker's process. For one small machine
  (`make prod-local`): the daemon already runs several runs at once, and a
  process per step would import torch once more per step (about 9 s here).
- `k8s`: each step is a Kubernetes Job (dagster-k8s's `k8s_job_executor`) in
  the image of the code location; CPU steps get `K8S_STEP_DEFAULTS` and the GPU
  assets add their `dagster-k8s/config` tags (`llama_assets.policies`) on top.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

EXECUTOR_ENV = "LLAMA_EXECUTOR"

K8S_STEP_DEFAULTS = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "1", "memory": "4Gi"},
            "limits": {"memory": "8Gi"},
        }
    }
}
"""Every step pod's resources unless its op tags say more (deep-merged by dagster-k8s)."""


def k8s_executor_config() -> dict:
    """The `k8s_job_executor` configuration: what every step pod gets."""
    return {"step_k8s_config": K8S_STEP_DEFAULTS}


def executor_from_env(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor `LLAMA_EXECUTOR` names; None keeps Dagster's default."""
    name = (os.environ if environ is None else environ).get(EXECUTOR_ENV, "").strip()
    if name in ("", "default"):
        return None
    if name == "in_process":
        return dg.in_process_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor  # only images that run on Kubernetes need it

        return k8s_job_executor.configured(k8s_executor_config(), name="k8s")
    raise ValueError(
        f"{EXECUTOR_ENV}={name!r}: choose default, in_process or k8s "
        "(unset keeps Dagster's default executor)"
    )
