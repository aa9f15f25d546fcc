"""`launch deploy|invoke|delete`: a SageMaker endpoint on the TensorFlow Serving image from a job's model.

`deploy JOB` creates the model (TF Serving image + the job's model.tar.gz), the endpoint config and
the endpoint; `invoke ENDPOINT IMAGE...` reads each image as `trainer.images.read_file` does (a regular file
within the image size limit, a PNG or JPEG by its header), sends them as TF Serving REST JSON (b64) and prints
text and confidence (`--url` sends them to a local `captcha-pipeline serve` instead); `delete ENDPOINT`
removes all three.
"""
import base64
import json

from launch import aws, job_config, sagemaker_job
from tfrecord import flags, storage
from tfrecord.errors import UserError, exits_on_user_error
from trainer import images


def _parser(action, description):
    p = flags.ArgumentParser(prog=f"captcha-pipeline launch {action}", description=description)
    sagemaker_job.add_region_argument(p)
    return p


def _deploy_args(argv):
    p = _parser("deploy", "an endpoint from a training job's model artifact")
    p.add_argument("job", type=job_config.sagemaker_name, help="training job name")
    p.add_argument("--role", required=True)
    p.add_argument("--endpoint-name", type=job_config.sagemaker_name, help="default: the job name")
    p.add_argument("--instance-type", default="ml.c5.large")
    p.add_argument("--instance-count", type=flags.positive_int, default=1)
    p.add_argument("--framework-version", default="2.20", help="TensorFlow Serving image version")
    p.add_argument("--image-uri", help="override the TensorFlow Serving image")
    p.add_argument("--wait", action="store_true", help="until the endpoint is InService")
    return p.parse_args(argv)


def _invoke_args(argv):
    p = _parser("invoke", "send PNG/JPEG files, print text and confidence")
    p.add_argument("endpoint", type=job_config.sagemaker_name, help="endpoint name (ignored with --url)")
    p.add_argument("images", nargs="+", type=flags.regular_file)
    p.add_argument("--url", type=flags.http_url, help="a local `serve` base URL instead, e.g. http://127.0.0.1:8080")
    return p.parse_args(argv)


def _delete_args(argv):
    p = _parser("delete", "delete the endpoint, its config and model")
    p.add_argument("endpoint", type=job_config.sagemaker_name)
    return p.parse_args(argv)


def _deploy(args, sm):
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


def _invoke(args):
    bodies = []
    for path in args.images:  # all read and checked before anything is sent
        try:
            data = images.read_file(path)
            images.header(data)
        except images.Refused as e:
            raise UserError(f"{path}: {e}") from None
        bodies.append({"b64": base64.b64encode(data).decode()})
    payload = json.dumps({"instances": bodies})
    if args.url:
        import requests

        try:
            response = requests.post(args.url.rstrip("/") + "/invocations", data=payload,
                                     headers={"Content-Type": "application/json"}, timeout=60)
        except requests.RequestException as e:
            raise UserError(f"{args.url}: no answer ({type(e).__name__})") from None
        if response.status_code != 200:
            raise UserError(f"{args.url}: HTTP {response.status_code}: {_first_line(response.text)}")
        where, body = args.url, response.content
    else:
        with storage.aws_errors(f"endpoint {args.endpoint}"):
            response = aws.client("sagemaker-runtime", args.region).invoke_endpoint(
                EndpointName=args.endpoint, ContentType="application/json", Accept="application/json", Body=payload)
            where, body = f"endpoint {args.endpoint}", response["Body"].read()
    for path, (text, confidence) in zip(args.images, _predictions(where, body)):
        print(f"{path}\t{text}\t{confidence:.3f}")
    return 0


def _predictions(where, body):
    """TF Serving's REST answer (bytes) -> [(text, confidence)]; anything else is one UserError line."""
    try:
        return [(p["text"], float(p["confidence"])) for p in json.loads(body)["predictions"]]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{where}: the answer is not TF Serving's predictions JSON: "
                        f"{_first_line(body.decode(errors='replace'))}") from None


def _first_line(text, limit=200):
    """The first non-blank line of an answer, cut at `limit` characters."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[:limit] + "..."


def _delete(args, sm):
    config = sm.describe_endpoint(EndpointName=args.endpoint)["EndpointConfigName"]
    models = [v["ModelName"] for v in sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]]
    sm.delete_endpoint(EndpointName=args.endpoint)
    sm.delete_endpoint_config(EndpointConfigName=config)
    for model in models:
        sm.delete_model(ModelName=model)
    print(f"deleted endpoint {args.endpoint}, endpoint config {config}, model(s) {', '.join(models)}")
    return 0


def _with_sagemaker(action, args):
    with storage.aws_errors(f"SageMaker ({args.region})"):
        return action(args, aws.client("sagemaker", args.region))


@exits_on_user_error
def deploy(argv=None):
    """`launch deploy JOB --role ARN`: model + endpoint config + endpoint on the TF Serving image."""
    return _with_sagemaker(_deploy, _deploy_args(argv))


@exits_on_user_error
def invoke(argv=None):
    """`launch invoke ENDPOINT IMAGE...`: TF Serving REST JSON to an endpoint or a local `serve`."""
    return _invoke(_invoke_args(argv))


@exits_on_user_error
def delete(argv=None):
    """`launch delete ENDPOINT`: the endpoint, its config and its model(s)."""
    return _with_sagemaker(_delete, _delete_args(argv))
