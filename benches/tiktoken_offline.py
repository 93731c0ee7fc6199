"""Make Python `tiktoken` work on a machine without internet access.

tiktoken downloads its BPE rank files from a public blob store on first use
and caches them under $TIKTOKEN_CACHE_DIR by the SHA-1 of the URL. The
tiktoken-rs crate (from crates.io) ships byte-identical copies of those
files; tiktoken checks each file's SHA-256, so seeding the cache from the
crate gives the real tokenizer, not a substitute.

    from tiktoken_offline import seed; seed()   # before importing tiktoken
"""
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile

FILES = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def _assets():
    pattern = os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-*/assets")
    found = sorted(glob.glob(pattern))
    if not found:
        # Fetch the crate sources (the workspace depends on tiktoken-rs).
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run(["cargo", "fetch", "--quiet"], cwd=root, check=True)
        found = sorted(glob.glob(pattern))
    if not found:
        raise RuntimeError("tiktoken-rs crate sources not found under ~/.cargo/registry")
    return found[-1]


def seed(cache_dir=None):
    cache_dir = cache_dir or os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), "promptops-tiktoken-cache"
    )
    os.makedirs(cache_dir, exist_ok=True)
    assets = _assets()
    for name, url in FILES.items():
        dst = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
        if not os.path.exists(dst):
            shutil.copyfile(os.path.join(assets, f"{name}.tiktoken"), dst)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
    return cache_dir
