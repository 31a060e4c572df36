"""The Kubernetes deployment, verified offline (no cluster can run here): every
step's Job as dagster-k8s's own construction builds it, from the execution plans
of the code location's jobs, the Helm values' run launcher and the executor's
defaults; GPU assets ask for a GPU on a GPU node, CPU assets for none; every
manifest validates against the Kubernetes schema."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.execution.api import create_execution_plan
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)

from llama_assets.definitions import defs
from llama_assets.executors import K8S_STEP_DEFAULTS, executor_from_env, k8s_executor_config
from llama_assets.jobs import JOBS
from llama_assets.policies import GPU_NODE_SELECTOR, GPU_TOLERATIONS

ROOT = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((ROOT / "deploy/k8s/values.yaml").read_text())
PROD_INSTANCE = yaml.safe_load((ROOT / "deploy/prod/dagster.yaml").read_text())
K8S_VERSION = "1.30"
GPU_ASSETS = {"finetuned_checkpoint", "eval_report", "embeddings"}
RUN_ID = "0b9c6a4e-5f2d-4c1e-9a57-3f1e2d4c5b6a"
IMAGE = "registry.example.com/llama-platform:0.1.0"
CAMEL_TO_SNAKE = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


@pytest.fixture(scope="module")
def run_launcher(tmp_path_factory) -> K8sRunLauncher:
    """The K8sRunLauncher the chart's instance ConfigMap sets up from values.yaml
    (a kubeconfig of its own instead of the in-cluster one, which needs a pod)."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "offline"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    config = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    return K8sRunLauncher(
        service_account_name="dagster",
        instance_config_map="dagster-instance",
        postgres_password_secret=VALUES["global"]["postgresqlSecretName"],
        dagster_home="/opt/dagster/dagster_home",
        load_incluster_config=False,
        kubeconfig_file=str(kubeconfig),
        job_namespace=config["jobNamespace"],
        env_secrets=[s["name"] for s in config["envSecrets"]],
        run_k8s_config={CAMEL_TO_SNAKE[k]: v for k, v in config["runK8sConfig"].items()},
    )


def manifest(job: kubernetes.client.V1Job) -> dict:
    data = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    data.update(apiVersion="batch/v1", kind="Job")
    return data


def step_jobs(run_launcher) -> dict[str, dict]:
    """Each asset step's Job, built as K8sStepHandler.launch_step builds it: the run's
    container context, merged with the executor's, then the step's own tags."""
    run = dg.DagsterRun(job_name="batch_pipeline", run_id=RUN_ID)
    executor_context = K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            k8s_executor_config()["step_k8s_config"]
        )
    )
    jobs = {}
    for job_def in (defs.resolve_job_def(j.name) for j in JOBS):
        for step in create_execution_plan(job_def).steps:
            context = (
                K8sContainerContext.create_for_run(run, run_launcher, include_run_tags=False)
                .merge(executor_context)
                .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags)))
            )
            name = f"dagster-step-{get_k8s_job_name(RUN_ID, step.key)}"
            job = construct_dagster_k8s_job(
                job_config=context.get_k8s_job_config(IMAGE, run_launcher),
                args=["dagster", "api", "execute_step"],
                job_name=name,
                pod_name=name,
                component="step_worker",
                user_defined_k8s_config=context.run_k8s_config,
                labels={"dagster/job": job_def.name, "dagster/op": step.key},
                env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": step.key}],
            )
            jobs[step.key] = manifest(job)
    return jobs


def test_gpu_assets_ask_for_a_gpu_node_and_cpu_assets_for_none(run_launcher):
    jobs = step_jobs(run_launcher)
    assert set(jobs) > GPU_ASSETS and len(jobs) == 15  # a step per asset of JOBS
    for key, job in jobs.items():
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        resources = container["resources"]
        assert (
            resources["requests"]["cpu"]
            == K8S_STEP_DEFAULTS["container_config"]["resources"]["requests"]["cpu"]
        ), key
        if key in GPU_ASSETS:
            assert resources["requests"]["nvidia.com/gpu"] == "1", key
            assert resources["limits"]["nvidia.com/gpu"] == "1", key
            assert pod["nodeSelector"] == GPU_NODE_SELECTOR, key
            assert pod["tolerations"] == GPU_TOLERATIONS, key
        else:
            assert "nvidia.com/gpu" not in str(job), key
            assert "nodeSelector" not in pod and "tolerations" not in pod, key
        # The Helm values' secrets and the chart's instance reach every step pod.
        assert {"secretRef": {"name": "llama-platform-aws"}} in container["envFrom"], key
        assert container["image"] == IMAGE
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_a_misspelt_manifest_fails_the_schema(run_launcher):
    """The validation can fail: a resources typo is caught."""
    job = step_jobs(run_launcher)["embeddings"]
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_the_run_worker_job_of_the_helm_values_validates(run_launcher):
    """The run pod the K8sRunLauncher starts: the values' small resources, no GPU."""
    run = dg.DagsterRun(job_name="train_evaluate_promote", run_id=RUN_ID)
    context = K8sContainerContext.create_for_run(run, run_launcher, include_run_tags=True)
    name = f"dagster-run-{RUN_ID}"
    job = manifest(
        construct_dagster_k8s_job(
            job_config=context.get_k8s_job_config(IMAGE, run_launcher),
            args=["dagster", "api", "execute_run"],
            job_name=name,
            pod_name=name,
            component="run_worker",
            user_defined_k8s_config=context.run_k8s_config,
        )
    )
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "1Gi"}
    assert "nvidia.com/gpu" not in str(job)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_the_executor_is_chosen_by_the_environment_and_the_default_is_unchanged():
    assert executor_from_env({}) is None  # Dagster's default: multiprocess / in-process
    assert executor_from_env({"LLAMA_EXECUTOR": "default"}) is None
    assert executor_from_env({"LLAMA_EXECUTOR": "in_process"}) is dg.in_process_executor
    k8s = executor_from_env({"LLAMA_EXECUTOR": "k8s"})
    assert k8s.name == "k8s"
    with pytest.raises(ValueError, match="LLAMA_EXECUTOR='celery'"):
        executor_from_env({"LLAMA_EXECUTOR": "celery"})
    # The K8s deployment selects it; nothing else does.
    env = {
        e["name"]: e["value"] for e in VALUES["dagster-user-deployments"]["deployments"][0]["env"]
    }
    assert env["LLAMA_EXECUTOR"] == "k8s"


def test_the_code_location_loads_with_the_user_deployments_environment(tmp_path):
    """What the user deployment's pod runs (`dagster api grpc --module-name ...`) with
    values.yaml's env: the definitions load and every job resolves. A `LLAMA_ENV` the
    code did not know once stopped the code location from loading at all."""
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    [flag, module] = deployment["dagsterApiGrpcArgs"]
    assert flag == "--module-name"
    script = (
        f"import importlib; defs = importlib.import_module({module!r}).defs; "
        "[defs.resolve_job_def(j.name) for j in defs.jobs]; "
        "print(sorted(defs.resources), defs.executor.name)"
    )
    home = {"DAGSTER_HOME": str(tmp_path), "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env={**home, **env}, cwd=ROOT,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'storage'" in done.stdout and done.stdout.strip().endswith("k8s"), done.stdout


def test_the_helm_values_render_the_prod_instance():
    """deploy/k8s/values.yaml and deploy/prod/dagster.yaml describe one instance."""
    pools = PROD_INSTANCE["concurrency"]["pools"]
    assert VALUES["concurrency"]["pools"] == {
        "defaultLimit": pools["default_limit"],
        "granularity": pools["granularity"],
    }
    runs = PROD_INSTANCE["concurrency"]["runs"]
    assert VALUES["concurrency"]["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert (
        VALUES["postgresql"]["postgresqlScheme"]
        == (PROD_INSTANCE["storage"]["postgres"]["postgres_db"]["scheme"])
    )
    assert VALUES["computeLogManager"]["type"] == PROD_INSTANCE["compute_logs"]["class"]
    s3_logs = VALUES["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert s3_logs["uploadInterval"] == PROD_INSTANCE["compute_logs"]["config"]["upload_interval"]
    monitoring = VALUES["dagsterDaemon"]["runMonitoring"]
    assert (
        monitoring["freeSlotsAfterRunEndSeconds"]
        == (PROD_INSTANCE["run_monitoring"]["free_slots_after_run_end_seconds"])
    )
    assert VALUES["dagsterDaemon"]["runRetries"]["retryOnAssetOrOpFailure"] is False
    assert PROD_INSTANCE["run_retries"]["retry_on_asset_or_op_failure"] is False
    # The user deployment serves the code location that pyproject names.
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert f'"--module-name", "{module}"' in (ROOT / "deploy/k8s/Dockerfile").read_text()


def test_the_vllm_serving_manifests_validate():
    """deploy/vllm/serving.yaml: the gateway + vLLM pod asks for one GPU and probes the
    gateway's readiness, liveness and startup routes."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/vllm/serving.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    [container] = docs[0]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe")} == {
        "/health/ready"
    }
