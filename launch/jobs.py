"""`captcha-pipeline launch {train,local,deploy,invoke,delete}`."""
import importlib
import sys

ACTIONS = {
    "train": ("launch.sagemaker_job", "start a SageMaker training job (Pipe mode by default)"),
    "local": ("launch.local", "run the same job on this machine: the container contract without Docker"),
    "deploy": ("launch.endpoints", "a SageMaker endpoint (TensorFlow Serving) from a job's model"),
    "invoke": ("launch.endpoints", "send images to an endpoint (or a local `serve`)"),
    "delete": ("launch.endpoints", "delete an endpoint, its config and model"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ACTIONS:
        lines = ["usage: captcha-pipeline launch <action> [options]", "", "actions:"]
        lines += [f"  {name:<8}{help}" for name, (_, help) in ACTIONS.items()]
        print("\n".join(lines), file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module = importlib.import_module(ACTIONS[argv[0]][0])
    if module.__name__ == "launch.endpoints":
        return module.main(argv) or 0
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
