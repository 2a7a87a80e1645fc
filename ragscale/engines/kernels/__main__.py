"""``python -m ragscale.engines.kernels``: build the decode kernels now (``make install``
runs it), retrying a build that failed before, and say what the engine will decode with."""

import sys

from ragscale.engines import kernels

try:
    print(f"ragscale decode kernels: {kernels.build(retry=True)}")
except OSError as error:
    print(f"decode will run on torch's ops: {error}")
    sys.exit(0)  # not an install failure: the engine falls back (kernels.ensure)
