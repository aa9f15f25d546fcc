from setuptools import find_packages, setup

setup(
    name="captcha-pipeline",
    version="0.1.0",
    description="Render text captchas with Apache Beam into sharded TFRecords, stream them into a Keras CNN, serve it.",
    python_requires=">=3.11",
    packages=find_packages(include=["beam_jobs", "tfrecord", "trainer", "launch"]),
    # The training side (trainer/, tfrecord/) needs only TensorFlow, google-crc32c and pydantic (it validates
    # dataset.json; a pip install of wheels for pydantic and pydantic-core, no TensorFlow), as in the SageMaker
    # TensorFlow container; every command's other imports come with its extra.
    install_requires=["google-crc32c>=1.5", "numpy", "pydantic>=2.14"],
    extras_require={
        # train, evaluate (its gallery needs Pillow), predict; `launch local` runs the trainer with them
        # (train draws its learning curve with matplotlib)
        "tf": ["tensorflow>=2.16", "tensorboard", "pillow", "matplotlib"],
        "tf-cpu": ["tensorflow-cpu>=2.16", "tensorboard", "pillow", "matplotlib"],
        # generate (Beam runners incl. Dask; boto3 for s3:// output)
        "beam": ["apache-beam[dask]>=2.60", "captcha==0.7.1", "pillow", "boto3"],
        # inspect (decodes the images, draws the contact sheet; boto3 for s3://)
        "inspect": ["pillow", "boto3"],
        # serve: the HTTP server and TensorFlow's CPU build (on a GPU host: [tf] plus flask and waitress)
        "serve": ["flask", "waitress", "tensorflow-cpu>=2.16"],
        # launch train (SDK v3 ModelTrainer), deploy/invoke/delete and launch local's S3 I/O (boto3),
        # invoke --url (requests)
        "launch": ["sagemaker-train", "boto3", "requests"],
        # moto's standalone server for S3 and SageMaker only: its full `server` extra pins graphql-core
        # past what the SDK's graphene accepts; jax (CPU) runs the model on Keras's JAX backend in a test
        "dev": ["pytest", "pytest-timeout", "pytest-xdist", "moto[s3,sagemaker]", "flask", "flask-cors", "requests",
                "jax", "jaxlib"],
    },
    entry_points={"console_scripts": ["captcha-pipeline=launch.cli:main"]},
)
