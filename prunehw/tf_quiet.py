"""Import TensorFlow without its C++ start-up chatter on stderr.

TensorFlow's native libraries log (oneDNN notice, missing CUDA driver) through
absl before any Python setting can reach them, which would bury the CLI's
one-line errors. The import runs with file descriptor 2 pointed at a temporary
file; if the import fails, what it wrote is replayed.
"""

from __future__ import annotations

import os
import sys
import tempfile

__all__ = ["import_tensorflow_quietly"]


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
            import keras  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
