"""Launch stage jobs of the real definitions through the Dagster instance, in a fresh process, with the
executor `$RICE_EXECUTOR` selects (as `dagster asset materialize` or the UI would).

    python -m tests.rice_assets.scaleout_driver '[{"job": "cohort_stage"}, {"fake_cohort": 14}, ...]'

Each plan entry is a stage job with an optional `partition` and `run_config`, or `{"fake_cohort": N}`
(write N labelled patients' registered volumes and catalog rows directly, as the training tests do).
Prints one JSON line: the runs made, `[{"job", "partition", "run_id", "success"}]`; exit status 1 when a
run failed.
"""

import json
import sys

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

from rice_models.paths import RicePaths
from tests.rice_assets.test_training import fake_registered_cohort


def main(argv: list[str]) -> int:
    plan = json.loads(argv[0])
    repository = ReconstructableRepository.for_module("rice_assets.definitions", "defs")
    runs = []
    with dg.DagsterInstance.get() as instance:
        for step in plan:
            if "fake_cohort" in step:
                fake_registered_cohort(RicePaths.from_env(), n=step["fake_cohort"], first=100)
                continue
            partition = step.get("partition")
            job = repository.get_reconstructable_job(step["job"])
            tags = None
            if partition:  # a multi-partition key also needs its per-dimension tags
                partitions_def = job.get_definition().partitions_def
                tags = partitions_def.get_tags_for_partition_key(partition)  # type: ignore[union-attr]
            result = dg.execute_job(job, instance, run_config=step.get("run_config"), tags=tags)
            runs.append(
                {
                    "job": step["job"],
                    "partition": partition,
                    "run_id": result.run_id,
                    "success": result.success,
                }
            )
            if not result.success:  # the later stages need this one
                failures = [e.message for e in result.all_events if e.is_failure]
                print(f"{step['job']} {partition or ''} failed: {failures}", file=sys.stderr)
                break
    print(json.dumps(runs))
    return 0 if all(run["success"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
