"""The training side: the Keras model, training, export, evaluation, prediction and serving.

Importing this package imports nothing heavy. It sets TensorFlow's C++ log level (INFO and WARNING
off, unless TF_CPP_MIN_LOG_LEVEL says otherwise) and has the first `import tensorflow`, wherever it
happens, keep the start-up lines below that level off stderr (tfrecord.quiet).
"""
import importlib.abc
import importlib.util
import os
import sys

from tfrecord import quiet

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        with quiet.tensorflow_import():
            self.loader.exec_module(module)


if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlowImport())
