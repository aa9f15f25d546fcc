"""What a training job owns in its output: the job's name, and what SageMaker uploads when the job ends.

`<output-path>/<job>/job.json` takes the name: created only if absent (locally a hard link of a complete
temp file, which never replaces; on S3 a PutObject with If-None-Match: *), so a second job of that name
in that output is refused, as SageMaker refuses a duplicate TrainingJobName, even when both start at
once. Its `output/` then gets model.tar.gz (success) or failure (failure), and output.tar.gz.

The tarballs are written to a local folder first and uploaded from there: when an upload fails, they are
still on local disk, and the caller keeps that folder and names it.
"""
import json
import os
import tarfile

from tfrecord import localfs, sagemaker, storage
from tfrecord.errors import UserError

JOB_FILE = "job.json"
MODEL, OUTPUT, FAILURE = "model.tar.gz", "output.tar.gz", "failure"


class UploadFailed(UserError):
    """The job's outputs could not be uploaded; they are in `folder` on local disk."""

    def __init__(self, message, folder):
        super().__init__(message)
        self.folder = folder


def taken(job_prefix):
    return UserError(f"training job {job_prefix} already exists (a job name is used once per output, as in "
                     "SageMaker): pick another --job-name")


def claim(job_prefix, description):
    """Take the job's name in its output: create `<job_prefix>/job.json` holding `description` (a dict),
    only if nothing of a job of that name is there. UserError if there is, or if another job takes it first."""
    if _used(job_prefix):
        raise taken(job_prefix)
    uri = storage.join(job_prefix, JOB_FILE)
    try:
        created = storage.create(uri, json.dumps(description, indent=2).encode())
    except OSError as e:
        raise UserError(f"output {job_prefix}: cannot be written ({e.strerror})") from None
    if not created:
        raise taken(job_prefix)


def _used(job_prefix):
    """Whether anything of a job of this name is in the output (a contender's temp file aside)."""
    if storage.is_s3(job_prefix):
        return bool(storage.list(job_prefix + "/"))
    return os.path.isdir(job_prefix) and any(not n.startswith(f".{JOB_FILE}.") for n in os.listdir(job_prefix))


def exported_nothing(model_dir):
    """Whether `model_dir` holds no file at all (the trainer exported its model elsewhere, or not at all)."""
    return not any(files for _, _, files in os.walk(model_dir))


def tar_dir(path, target):
    """`path`'s contents as the gzipped tarball `target` (written to disk, not held in memory)."""
    with localfs.atomic_file(target) as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for name in sorted(os.listdir(path)):
            tar.add(os.path.join(path, name), arcname=name)


def package(root, folder, failed, keep_model):
    """From the chief's container `root`: write its outputs into local `folder`, as SageMaker arranges
    them; returns the names to upload. output.tar.gz always; model.tar.gz on success; failure on failure.
    With `keep_model`, a failed job's exported model is written too (kept locally, not uploaded)."""
    os.makedirs(folder, exist_ok=True)
    tar_dir(sagemaker.output_data_dir(root), os.path.join(folder, OUTPUT))
    if not failed or keep_model:
        tar_dir(sagemaker.model_dir(root), os.path.join(folder, MODEL))
    if not failed:
        return [OUTPUT, MODEL]
    with open(sagemaker.failure_path(root), "rb") as src:
        localfs.copy_atomic(src, os.path.join(folder, FAILURE))
    return [OUTPUT, FAILURE]


def upload(folder, names, output_prefix):
    """Upload `folder`/name to `output_prefix`/name for each name (the failure reason last, model first);
    UploadFailed naming `folder` if one fails."""
    for name in sorted(names, key=[MODEL, OUTPUT, FAILURE].index):
        try:
            storage.put_file(os.path.join(folder, name), storage.join(output_prefix, name))
        except (UserError, OSError) as e:
            raise UploadFailed(f"upload to {output_prefix} failed: {e}; the job's outputs are kept in {folder}",
                               folder) from None
