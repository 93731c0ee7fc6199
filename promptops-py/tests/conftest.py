from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

import promptops

PY_ROOT = Path(__file__).resolve().parents[1]
REPO = PY_ROOT.parent
VECTORS = REPO / "tests" / "vectors"
EXAMPLE_PROMPTS = REPO / "examples" / "prompts"


def load_vector(name: str) -> Dict[str, Any]:
    """`tests/vectors/NAME`, parsed (the files the Rust runner reads)."""
    with open(VECTORS / name, encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def render_doc() -> Dict[str, Any]:
    return load_vector("render.json")


@pytest.fixture(scope="session")
def vector_client(render_doc: Dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> promptops.Client:
    """A client over the render vectors' snapshot, loaded as a bundle file
    (as tests/lib.rs `render_vector_client` does)."""
    path = tmp_path_factory.mktemp("vectors") / "bundle.json"
    path.write_text(json.dumps(render_doc["snapshot"]), encoding="utf-8")
    return promptops.Client(bundle=path)


@pytest.fixture(scope="session")
def example_client() -> promptops.Client:
    return promptops.Client(project="demo", prompts_dir=EXAMPLE_PROMPTS)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A run that collected nothing must fail, never pass as "no tests" (5).
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
