"""Makes this Python process a machine without TensorFlow (the lent GPU machine's image has none): an import of
`tensorflow` fails as if it were not installed, and each attempt is appended, with its call stack, to the file
named by NO_TENSORFLOW_LOG. Python runs this file at start-up when its directory is on PYTHONPATH
(tests/test_jax.py puts it there for the processes it starts)."""

import importlib.abc
import os
import sys
import traceback


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" and not name.startswith("tensorflow."):
            return None
        log = os.environ.get("NO_TENSORFLOW_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"=== import {name}\n{''.join(traceback.format_stack())}\n")
        raise ModuleNotFoundError(f"No module named '{name}' (hidden: tests/no_tensorflow)", name=name)


sys.meta_path.insert(0, _NoTensorFlow())
