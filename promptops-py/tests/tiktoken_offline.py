"""OpenAI's tiktoken, usable without the internet.

tiktoken downloads its BPE files from openaipublic.blob.core.windows.net on
first use, which this machine cannot reach. The same files (byte for byte:
tiktoken checks their SHA-256 against the hashes it pins) ship inside the
`tiktoken-rs` crate, a dev-dependency of the workspace, so cargo already has
them. They are put into a private TIKTOKEN_CACHE_DIR under the names
tiktoken looks for, and then `tiktoken.get_encoding()` runs exactly as it
does with a warm cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def _assets_dir() -> Path:
    """`assets/` of the tiktoken-rs crate the workspace locks."""
    env = os.environ.get("PROMPTOPS_TIKTOKEN_ASSETS")
    if env:
        return Path(env)
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--manifest-path", str(REPO / "Cargo.toml")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for pkg in json.loads(out)["packages"]:
        if pkg["name"] == "tiktoken-rs":
            return Path(pkg["manifest_path"]).parent / "assets"
    raise RuntimeError("tiktoken-rs is not in the workspace's Cargo.lock")


@functools.lru_cache(maxsize=None)
def cache_dir() -> str:
    """A TIKTOKEN_CACHE_DIR holding cl100k_base and o200k_base."""
    assets = _assets_dir()
    d = tempfile.mkdtemp(prefix="promptops-tiktoken-")
    for name, url in URLS.items():
        key = hashlib.sha1(url.encode()).hexdigest()
        shutil.copyfile(assets / f"{name}.tiktoken", os.path.join(d, key))
    return d


@functools.lru_cache(maxsize=None)
def tiktoken_encoding(name: str) -> Any:
    import tiktoken

    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir()
    return tiktoken.get_encoding(name)
