"""Where the submitting script lives, read from the pipeline itself.

Functions and DoFns defined in a script's `__main__` are pickled by value, code object and
all, so the staged pipeline holds the script's absolute path (`co_filename`). When the worker
shares the submitter's disk (the embedded pool of `headrace serve`, or a worker on the same
machine) that directory goes on the pipeline's `sys.path`, so modules next to the script
import as they do for the DirectRunner. Nothing is unpickled: the pickles are only scanned
(pickletools), so no user code runs in the worker.

Not found: a pipeline whose user code all lives in modules (nothing of `__main__` pickled),
or a script on another machine. Ship such code with --setup_file or --extra_package, as on
Dataflow.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import pickletools
import sys
import zlib
from pathlib import Path

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

_COMBINES = {common_urns.composites.COMBINE_PER_KEY.urn, common_urns.composites.COMBINE_GLOBALLY.urn,
             common_urns.combine_components.COMBINE_GROUPED_VALUES.urn}
# Code from installed packages is pickled by value too (lambdas); it is not the user's script.
_INSTALLED = {"site-packages", "dist-packages"}


def script_dirs(pipeline: beam_runner_api_pb2.Pipeline) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for transform in pipeline.components.transforms.values():
        for name in _source_files(_pickled_fn(transform.spec)):
            path = Path(name)
            if path.is_absolute() and path.suffix == ".py" and _users(path) and path.is_file():
                found[str(path.parent)] = None
    return tuple(found)


def _pickled_fn(spec: beam_runner_api_pb2.FunctionSpec) -> bytes:
    try:
        if spec.urn == common_urns.primitives.PAR_DO.urn:
            return beam_runner_api_pb2.ParDoPayload.FromString(spec.payload).do_fn.payload
        if spec.urn in _COMBINES:
            return beam_runner_api_pb2.CombinePayload.FromString(spec.payload).combine_fn.payload
    except Exception:  # noqa: BLE001 - a malformed payload: the executor will say so
        pass
    return b""


def _source_files(payload: bytes) -> set[str]:
    """String constants ending in .py in a Beam pickle (base64 of a bz2 or zlib pickle)."""
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return set()
    for decompress in (bz2.decompress, zlib.decompress):
        try:
            pickled = decompress(data)
            break
        except (OSError, ValueError, zlib.error):
            continue
    else:
        return set()
    names = set()
    try:
        for _op, arg, _pos in pickletools.genops(pickled):
            if isinstance(arg, str) and arg.endswith(".py"):
                names.add(arg)
    except Exception:  # noqa: BLE001 - a truncated or odd pickle: keep what was read
        pass
    return names


def _users(path: Path) -> bool:
    if _INSTALLED & set(path.parts):
        return False
    return not any(path.is_relative_to(prefix) for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix})
