"""`captcha-pipeline <command> ...`: the one console command. Each entry names the `module:function` that
takes the rest of the arguments, Beam's `run(argv)` style, and returns an exit status."""
import importlib
import sys

from tfrecord.errors import run_as_process

COMMANDS = {
    "generate": ("beam_jobs.generate:main", "render captchas with Apache Beam into sharded TFRecords"),
    "inspect": ("launch.inspect_dataset:main", "validate a dataset against its manifest; contact sheet"),
    "train": ("trainer.train:main", "train the CNN (SageMaker script-mode contract, or local flags)"),
    "evaluate": ("trainer.evaluate:main", "score a model on a split: JSON report and error gallery"),
    "predict": ("trainer.predict:main", "read image files with a SavedModel"),
    "serve": ("trainer.serve:main", "serve a SavedModel over the SageMaker inference container contract"),
    "launch train": ("launch.sagemaker_job:main", "start a SageMaker training job (Pipe mode by default)"),
    "launch local": ("launch.local:main", "run the same job on this machine: the container contract without Docker"),
    "launch deploy": ("launch.endpoints:deploy", "a SageMaker endpoint (TensorFlow Serving) from a job's model"),
    "launch invoke": ("launch.endpoints:invoke", "send images to an endpoint (or a local `serve`)"),
    "launch delete": ("launch.endpoints:delete", "delete an endpoint, its config and model"),
}


def usage():
    lines = ["usage: captcha-pipeline <command> [options]   (<command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<15}{help}" for name, (_, help) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    if argv is None:  # the process's own command line: a crash ends the process (tfrecord.errors.run_as_process)
        return run_as_process(main, sys.argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    words = 2 if argv[0] == "launch" else 1
    command = " ".join(argv[:words])
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    module, function = COMMANDS[command][0].split(":")
    return getattr(importlib.import_module(module), function)(argv[words:]) or 0


if __name__ == "__main__":
    sys.exit(main())
