"""Lines Beam prints before any code of ours runs: kept off stderr, every other line passes.

`import apache_beam` warns that Google Cloud's BigQuery client is missing (this package uses none), in the
driver and in every worker process; a worker then logs that its logging handler was created, before it
applies the worker log level. The driver's warning is a logging record (filtered in `beam_jobs/__init__.py`);
the workers' lines reach file descriptor 2 directly, so `generate` runs the pipeline inside
`tfrecord.quiet.stderr_without(start_up_line)`.
"""
NO_GCP_CLIENT = "apitools not found, and bigquery client libraries are not available"
START_UP = (
    f"WARNING:root:{NO_GCP_CLIENT}",  # import apache_beam
    "INFO:__main__:Logging handler created.",  # sdk_worker_main, before it applies the worker log level
)


def start_up_line(line):
    """Whether `line` (as a worker wrote it to stderr) is one of Beam's start-up lines."""
    return line.startswith(START_UP)
