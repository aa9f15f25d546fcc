"""What SageMaker uploads when a training job ends: model.tar.gz, output.tar.gz and the failure reason."""
import io
import os
import tarfile
import tempfile

from tfrecord import sagemaker, storage


def tar_dir(path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in sorted(os.listdir(path)):
            tar.add(os.path.join(path, name), arcname=name)
    return buffer.getvalue()


def upload_outputs(output_prefix, status):
    """model.tar.gz (on success), output.tar.gz and failure (on failure), as SageMaker arranges them."""
    uploads = {"output.tar.gz": tar_dir(sagemaker.output_data_dir())}
    if status == 0:
        uploads["model.tar.gz"] = tar_dir(sagemaker.model_dir())
    elif os.path.exists(sagemaker.failure_path()):
        with open(sagemaker.failure_path(), "rb") as f:
            uploads["failure"] = f.read()
    for name, data in uploads.items():
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            storage.put_file(tmp.name, storage.join(output_prefix, name))
    return storage.join(output_prefix, "model.tar.gz")
