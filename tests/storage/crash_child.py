"""A run that stops at a chosen moment of a publish, for the kill -9 tests.

``python -m tests.storage.crash_child shards|checkpoint MARKER`` materialises
`clean_shards` (batch docs/one) or `finetuned_checkpoint` (tiny) on the data
root of the environment, in an instance of its own, and blocks for good at the
moment named: after every part of the new shard set is uploaded and before its
manifest is written, or after the files of the second training checkpoint are
uploaded and before its tree.json is. It writes MARKER then, and waits to be
killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import dagster as dg

from llama_assets.base import shards, store
from llama_assets.instance import open_instance
from resources.environments import resources_for

KEY = "docs/one"
TRAIN = {"max_steps": 4, "seq_len": 64, "micro_batch_size": 2, "checkpoint_every": 1}


def hold(marker: Path, what: str) -> None:
    marker.write_text(what)
    time.sleep(3600)


def main(what: str, marker: Path) -> None:
    with open_instance() as instance:
        instance.add_dynamic_partitions("batches", [KEY])
        if what == "shards":
            from llama_assets.curate.assets import clean_shards

            shards.publish_manifest = lambda target, *args: hold(marker, str(target))
            dg.materialize(
                [clean_shards], instance=instance, resources=resources_for(), partition_key=KEY
            )
            return
        from llama_assets.training.assets import finetuned_checkpoint

        real, published = store.publish_manifest, []

        def second_checkpoint_held(target, manifest, expected="read"):
            if "/runs/" in target.key:
                published.append(target.key)
                if len(published) == 2:
                    hold(marker, str(target))
            return real(target, manifest, expected)

        store.publish_manifest = second_checkpoint_held
        dg.materialize(
            [finetuned_checkpoint],
            instance=instance,
            resources=resources_for(),
            partition_key="tiny",
            run_config={"ops": {"finetuned_checkpoint": {"config": TRAIN}}},
        )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
