"""The dead-run sensor: runs whose process died give their pool slots back."""

import dagster as dg

from llama_assets.dead_runs import reap_dead_runs


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs whose process died (kill -9, out of memory) as failed and gives "
    "their pool slots back, so later runs do not wait forever.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext):
    dead = reap_dead_runs(context.instance)
    for run in dead:
        context.log.warning(f"run {run.run_id} (pid {run.pid}) died; marked failed, slots freed")
    return dg.SkipReason(f"{len(dead)} dead run(s) reaped" if dead else "no dead run")
