"""A Windmill-style job reporting to a Pushgateway with prometheus_client.

Usage: windmill_job.py GATEWAY STEP

STEP is one of
  push      push_to_gateway: replace the group with a counter, a gauge, a
            histogram and a summary;
  pushadd   pushadd_to_gateway: replace only the gauge family;
  paths     push_to_gateway to a job and grouping values that need base64
            (a '/' and an empty value);
  delete    delete_from_gateway both groups.

The exposition the step pushed is written to stdout, so that the caller can
compare what the gateway stores with what was sent (the _created series hold
the time the metrics were created).
"""

import sys

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    delete_from_gateway,
    generate_latest,
    push_to_gateway,
    pushadd_to_gateway,
)

JOB = "windmill"
GROUPING = {"instance": "wm-worker-1", "flow": "a b"}
PATHS_JOB = "windmill/flows"
PATHS_GROUPING = {"script_path": "u/admin/etl", "tag": ""}


def main(gateway, step):
    registry = CollectorRegistry()
    if step == "push":
        jobs = Counter("wm_jobs", "Jobs run by the worker.", ["language"], registry=registry)
        jobs.labels("python3").inc(3)
        jobs.labels("deno").inc()
        Gauge("wm_queue_depth", "Jobs waiting in the queue.", registry=registry).set(2.5)
        duration = Histogram(
            "wm_job_duration_seconds", "Job duration.", buckets=(0.1, 1, 10), registry=registry
        )
        for v in (0.0625, 0.5, 4):
            duration.observe(v)
        size = Summary("wm_result_size_bytes", "Size of job results.", registry=registry)
        size.observe(100)
        size.observe(28)
        push_to_gateway(gateway, job=JOB, registry=registry, grouping_key=GROUPING)
    elif step == "pushadd":
        Gauge("wm_queue_depth", "Jobs waiting in the queue.", registry=registry).set(0)
        pushadd_to_gateway(gateway, job=JOB, registry=registry, grouping_key=GROUPING)
    elif step == "paths":
        Gauge("wm_flow_steps", "Steps of the flow.", registry=registry).set(4)
        push_to_gateway(gateway, job=PATHS_JOB, registry=registry, grouping_key=PATHS_GROUPING)
    elif step == "delete":
        delete_from_gateway(gateway, job=JOB, grouping_key=GROUPING)
        delete_from_gateway(gateway, job=PATHS_JOB, grouping_key=PATHS_GROUPING)
    else:
        raise SystemExit("unknown step %r" % step)
    sys.stdout.write(generate_latest(registry).decode("utf-8"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
