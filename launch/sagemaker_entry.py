"""SageMaker script-mode entry point (packaged at the source root): `python -m trainer.train <hyperparameter flags>`."""
import runpy

runpy.run_module("trainer.train", run_name="__main__", alter_sys=True)
