from setuptools import find_packages, setup

setup(
    name="captcha-pipeline",
    version="0.1.0",
    description="Render text captchas with Apache Beam into sharded TFRecords, stream them into a Keras CNN, serve it.",
    python_requires=">=3.11",
    packages=find_packages(include=["beam_jobs", "tfrecord", "trainer", "launch"]),
    # The training side (trainer/, tfrecord/) needs only TensorFlow and google-crc32c, as in the
    # SageMaker TensorFlow container; everything else is an extra.
    install_requires=["google-crc32c>=1.5", "numpy"],
    extras_require={
        "tf": ["tensorflow>=2.16", "tensorboard"],
        "tf-cpu": ["tensorflow-cpu>=2.16", "tensorboard"],
        "beam": ["apache-beam[aws,tfrecord,dask]>=2.60", "captcha==0.7.1", "pillow", "boto3", "dask", "distributed"],
        "serve": ["flask", "waitress", "pillow"],
        # SageMaker training jobs through the SDK v3 ModelTrainer; endpoints and local runs through boto3
        "launch": ["sagemaker-train", "boto3", "requests"],
        # moto's standalone server for S3 and SageMaker only: its full `server` extra pins graphql-core
        # past what the SDK's graphene accepts
        "dev": ["pytest", "pytest-timeout", "moto[s3,sagemaker]", "flask", "flask-cors", "requests"],
    },
    entry_points={"console_scripts": ["captcha-pipeline=launch.cli:main"]},
)
