"""`captcha-pipeline <command> ...`: one console command; each subcommand is a module's main(argv)."""
import importlib
import os
import sys

COMMANDS = {
    "generate": ("beam_jobs.generate", "render captchas with Apache Beam into sharded TFRecords"),
    "inspect": ("beam_jobs.inspect_dataset", "validate a dataset against its manifest; contact sheet"),
    "train": ("trainer.train", "train the CNN (SageMaker script-mode contract, or local flags)"),
    "evaluate": ("trainer.evaluate", "score a model on a split: JSON report and error gallery"),
    "predict": ("trainer.predict", "read image files with a SavedModel"),
    "launch": ("launch.jobs", "SageMaker training jobs and endpoints, or the same contract run locally"),
    "serve": ("launch.serve", "serve a SavedModel over the SageMaker inference container contract"),
}


def usage():
    lines = ["usage: captcha-pipeline <command> [options]   (<command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<10}{help}" for name, (_, help) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
