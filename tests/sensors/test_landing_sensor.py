"""The landing-zone sensor registers new batches and requests one run each."""

from __future__ import annotations

import dagster as dg

from llama_assets.partitions import BATCHES
from resources.storage import LocalDataRoot
from sensors.landing import landing_zone_sensor
from tests.landing import land


def test_sensor_registers_new_batches_once(layout, instance):
    land(layout, "web/20260101T000000Z", {"a.txt": "hello"})
    land(layout, "wiki/20260102T000000Z", {"b.txt": "hello"})
    # A batch still being copied (hidden folder) is not a batch yet.
    (layout.landing / "wiki" / ".20260103T000000Z.tmp").mkdir(parents=True)
    resources = {"storage": LocalDataRoot(root=str(layout.root))}

    context = dg.build_sensor_context(instance=instance, resources=resources)
    result = landing_zone_sensor(context)
    keys = ["web/20260101T000000Z", "wiki/20260102T000000Z"]
    assert [r.partition_key for r in result.run_requests] == keys
    assert [r.run_key for r in result.run_requests] == [f"landing:{k}" for k in keys]
    assert result.dynamic_partitions_requests[0].partition_keys == keys

    instance.add_dynamic_partitions(BATCHES, keys)
    again = landing_zone_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(again, dg.SkipReason)

    land(layout, "web/20260104T000000Z", {"c.txt": "hello"})
    third = landing_zone_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert [r.partition_key for r in third.run_requests] == ["web/20260104T000000Z"]
