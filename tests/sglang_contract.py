"""SGLang's own request/response contract, loaded from the pinned ``sglang`` wheel.

``sglang/api/v1/api_types.py`` is generated from SGLang's protobuf schema and is what SGLang's
HTTP server checks every /generate body with (``generate_contract_error``). It imports only
msgspec, so it loads standalone although ``import sglang`` needs a GPU stack.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

PINNED = "0.5.23"


def api_types():
    if getattr(api_types, "module", None) is None:
        spec = importlib.util.find_spec("sglang")  # top-level find_spec does not import the package
        if spec is None or not spec.submodule_search_locations:
            pytest.fail("the sglang package is missing: `make install` installs it (requirements-models.txt)")
        path = Path(list(spec.submodule_search_locations)[0]) / "api" / "v1" / "api_types.py"
        loader = importlib.util.spec_from_file_location("sglang_api_v1_types", path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
        api_types.module = module
    return api_types.module


def sglang_version() -> str:
    from importlib.metadata import version

    return version("sglang")


def check_request(body) -> None:
    """Raise (with SGLang's message) unless SGLang would accept this /generate body."""
    api_types().GenerateRequest.from_json_value(json.loads(json.dumps(body)))


def check_response(body) -> None:
    """Raise unless every item of a /generate answer decodes as SGLang's GenerateResponse."""
    module = api_types()
    for item in body if isinstance(body, list) else [body]:
        module.GenerateResponse.from_json_value(item)
        assert "meta_info" in item and isinstance(item["meta_info"], dict)
        module.GenerateMetaInfo.from_json_value(item["meta_info"])
