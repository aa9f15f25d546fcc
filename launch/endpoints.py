"""`launch deploy|invoke|delete`: a SageMaker endpoint on the TensorFlow Serving image from a job's model.

`deploy JOB` creates the model (TF Serving image + the job's model.tar.gz), the endpoint config and
the endpoint; `invoke ENDPOINT IMAGE...` sends the images as TF Serving REST JSON (b64) and prints
text and confidence (`--url` sends them to a local `captcha-pipeline serve` instead); `delete ENDPOINT`
removes all three.
"""
import argparse
import base64
import json
import os
import sys

from launch import sagemaker_job, storage
from tfrecord.errors import UserError, exits_on_user_error


def parse_args(argv):
    p = argparse.ArgumentParser(prog="captcha-pipeline launch", description=__doc__.splitlines()[0])
    p.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    actions = p.add_subparsers(dest="action", required=True)
    deploy = actions.add_parser("deploy", help="endpoint from a training job's model artifact")
    deploy.add_argument("job", help="training job name")
    deploy.add_argument("--role", required=True)
    deploy.add_argument("--endpoint-name", help="default: the job name")
    deploy.add_argument("--instance-type", default="ml.c5.large")
    deploy.add_argument("--instance-count", type=int, default=1)
    deploy.add_argument("--framework-version", default="2.20", help="TensorFlow Serving image version")
    deploy.add_argument("--image-uri", help="override the TensorFlow Serving image")
    deploy.add_argument("--wait", action="store_true", help="until the endpoint is InService")
    invoke = actions.add_parser("invoke", help="send PNG/JPEG files, print text and confidence")
    invoke.add_argument("endpoint", help="endpoint name (ignored with --url)")
    invoke.add_argument("images", nargs="+")
    invoke.add_argument("--url", help="a local `serve` base URL instead, e.g. http://127.0.0.1:8080")
    delete = actions.add_parser("delete", help="delete the endpoint, its config and model")
    delete.add_argument("endpoint")
    return p.parse_args(argv)


def deploy(args, sm):
    job = sm.describe_training_job(TrainingJobName=args.job)
    if job["TrainingJobStatus"] != "Completed":
        raise UserError(f"training job {args.job} is {job['TrainingJobStatus']}, not Completed")
    name = args.endpoint_name or args.job
    image = args.image_uri or sagemaker_job.image_uri("inference", args.framework_version, args.region,
                                                      args.instance_type)
    sm.create_model(ModelName=name, ExecutionRoleArn=args.role,
                    PrimaryContainer={"Image": image, "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InstanceType": args.instance_type,
        "InitialInstanceCount": args.instance_count}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    print(f"endpoint {name} ({image})", flush=True)
    if args.wait:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name)
        print(f"endpoint {name}: InService")
    return 0


def invoke(args):
    bodies = []
    for path in args.images:
        try:
            with open(path, "rb") as f:
                bodies.append({"b64": base64.b64encode(f.read()).decode()})
        except OSError as e:
            raise UserError(f"{path}: {e.strerror}") from None
    payload = json.dumps({"instances": bodies})
    if args.url:
        import requests

        response = requests.post(args.url.rstrip("/") + "/invocations", data=payload,
                                 headers={"Content-Type": "application/json"}, timeout=60)
        if response.status_code != 200:
            raise UserError(f"{args.url}: HTTP {response.status_code}: {response.text.strip()}")
        result = response.json()
    else:
        runtime = storage.client("sagemaker-runtime", args.region)
        response = runtime.invoke_endpoint(EndpointName=args.endpoint, ContentType="application/json",
                                           Accept="application/json", Body=payload)
        result = json.loads(response["Body"].read())
    for path, prediction in zip(args.images, result["predictions"]):
        print(f"{path}\t{prediction['text']}\t{prediction['confidence']:.3f}")
    return 0


def delete(args, sm):
    config = sm.describe_endpoint(EndpointName=args.endpoint)["EndpointConfigName"]
    models = [v["ModelName"] for v in sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]]
    sm.delete_endpoint(EndpointName=args.endpoint)
    sm.delete_endpoint_config(EndpointConfigName=config)
    for model in models:
        sm.delete_model(ModelName=model)
    print(f"deleted endpoint {args.endpoint}, endpoint config {config}, model(s) {', '.join(models)}")
    return 0


@exits_on_user_error
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.action == "invoke":
        return invoke(args)
    sm = storage.client("sagemaker", args.region)
    try:
        return deploy(args, sm) if args.action == "deploy" else delete(args, sm)
    except sm.exceptions.ClientError as e:
        raise UserError(str(e)) from None
