"""The producer: the Beam job that renders captchas into sharded TFRecords, and its label plans."""
import logging

from beam_jobs.worker_log import NO_GCP_CLIENT


class _NoMissingGcpClientWarning(logging.Filter):
    """Importing apache_beam warns that Google Cloud's BigQuery client is missing; this package uses none."""

    def filter(self, record):
        return not str(record.msg).startswith(NO_GCP_CLIENT)


logging.getLogger().addFilter(_NoMissingGcpClientWarning())  # before anything here imports apache_beam
