"""Cache push/pull against a real S3-compatible HTTP server on 127.0.0.1 (moto's server), no mocks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from szdet.cloud import s3
from szdet.config import PreprocessConfig
from szdet.data.cache_settings import CacheSettings
from szdet.errors import UserError
from szdet.fileio import sha256_file

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SETTINGS = CacheSettings.of(PreprocessConfig(), "referential").to_json()  # a manifest's first keys


@pytest.fixture(scope="module")
def endpoint():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path_factory):
    """Test credentials only, and no lookup outside this machine (no profile files, no IMDS)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    nowhere = tmp_path_factory.mktemp("aws") / "absent"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, **_client_credentials())


def _client_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture
def bucket(client):
    name = f"szdet-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def write_split(root: Path, split: str, sizes: dict[str, int], seed: int = 0) -> list[Path]:
    """A split folder in the cache's layout: float16 arrays and a manifest listing them."""
    rng = np.random.default_rng(seed)
    recordings, paths = [], []
    for name, n_samples in sizes.items():
        patient = name.split("_")[0]
        path = root / split / patient / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.standard_normal((19, n_samples)).astype(np.float16))
        recordings.append({
            "name": name, "patient": patient, "file": f"{patient}/{name}.npy",
            "sha256": sha256_file(path), "bytes": path.stat().st_size,
        })  # fmt: skip
        paths.append(path)
    manifest = {**SETTINGS, "split": split, "recordings": recordings, "skipped": []}
    (root / split / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return paths


@pytest.fixture
def cache(tmp_path) -> Path:
    root = tmp_path / "cache"
    write_split(
        root, "train", {"aaa_s001_t000": 4096, "aaa_s001_t001": 2048, "bbb_s002_t000": 1024}
    )
    write_split(root, "dev", {"ccc_s001_t000": 3000, "ddd_s003_t002": 512}, seed=1)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_round_trip_then_everything_is_skipped(cache, tmp_path, endpoint, bucket, client):
    url = f"s3://{bucket}/cache/tusz"
    first = s3.push(cache, url, endpoint_url=endpoint, workers=4)
    assert (first.transferred_files, first.skipped_files) == (5, 0)
    head = client.head_object(Bucket=bucket, Key="cache/tusz/train/aaa/aaa_s001_t000.npy")
    assert head["Metadata"]["sha256"] == sha256_file(cache / "train/aaa/aaa_s001_t000.npy")

    out = tmp_path / "pulled"
    pulled = s3.pull(url, out, endpoint_url=endpoint, workers=4)
    assert pulled.transferred_files == 5
    assert tree(out) == tree(cache)

    assert s3.push(cache, url, endpoint_url=endpoint, workers=4).transferred_files == 0
    again = s3.pull(url, out, endpoint_url=endpoint, workers=4)
    assert (again.transferred_files, again.skipped_files) == (0, 5)


def test_large_files_move_in_parts(tmp_path, endpoint, bucket, client, monkeypatch):
    monkeypatch.setattr(s3, "MULTIPART_CHUNK_BYTES", 5 << 20)  # S3's smallest part
    root = tmp_path / "cache"
    write_split(root, "train", {"big_s001_t000": 330_000})  # 12.5 MB -> 3 parts
    s3.push(root, f"s3://{bucket}/c", endpoint_url=endpoint, workers=2)
    etag = client.head_object(Bucket=bucket, Key="c/train/big/big_s001_t000.npy")["ETag"]
    assert etag.strip('"').endswith("-3")  # S3 marks a multipart object's ETag with its part count
    s3.pull(f"s3://{bucket}/c", tmp_path / "out", endpoint_url=endpoint, workers=2)
    assert tree(tmp_path / "out") == tree(root)


def test_corrupt_object_is_caught_and_the_pull_resumes_once_fixed(
    cache, tmp_path, endpoint, bucket, client
):
    url = f"s3://{bucket}/c"
    s3.push(cache, url, endpoint_url=endpoint)
    key = "c/train/bbb/bbb_s002_t000.npy"  # the last file of the last split: the rest lands first
    good = client.get_object(Bucket=bucket, Key=key)
    body = bytearray(good["Body"].read())
    body[-1] ^= 0xFF  # same size, same stored sha256, different content
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=good["Metadata"])

    out = tmp_path / "pulled"
    with pytest.raises(UserError, match=rf"s3://{bucket}/{key}: sha256 .* does not match"):
        s3.pull(url, out, endpoint_url=endpoint, workers=1)
    assert not (out / "train/bbb/bbb_s002_t000.npy").exists()  # never a bad file under its name
    assert not list(out.rglob("manifest.json"))  # no manifest while a listed file is missing
    assert not list(out.rglob("*.tmp"))

    # A plain push trusts the object's size and stored sha256; --force uploads it again.
    assert s3.push(cache, url, endpoint_url=endpoint).transferred_files == 0
    assert s3.push(cache, url, endpoint_url=endpoint, force=True).transferred_files == 5
    resumed = s3.pull(url, out, endpoint_url=endpoint, workers=1)
    assert (resumed.transferred_files, resumed.skipped_files) == (1, 4)
    assert tree(out) == tree(cache)


def test_pull_completes_a_partial_local_copy(cache, tmp_path, endpoint, bucket):
    url = f"s3://{bucket}/c"
    s3.push(cache, url, endpoint_url=endpoint)
    out = tmp_path / "pulled"
    s3.pull(url, out, endpoint_url=endpoint)
    (out / "train/aaa/aaa_s001_t000.npy").unlink()
    truncated = out / "dev/ccc/ccc_s001_t000.npy"
    truncated.write_bytes(truncated.read_bytes()[:100])  # what a killed writer could have left
    stale = out / "dev/ccc/.ccc_s001_t001.npy.4242.tmp"
    stale.write_bytes(b"partial")
    (out / "train/manifest.json").unlink()

    report = s3.pull(url, out, endpoint_url=endpoint)
    assert (report.transferred_files, report.skipped_files) == (2, 3)
    assert not stale.exists()
    assert tree(out) == tree(cache)


def test_push_refuses_a_local_file_that_differs_from_its_manifest(
    cache, tmp_path, endpoint, bucket, client
):
    url = f"s3://{bucket}/c"
    s3.push(cache, url, endpoint_url=endpoint)
    # A rebuilt split whose manifest changed, but one array is damaged on disk.
    write_split(cache, "dev", {"ccc_s001_t000": 3000, "ddd_s003_t002": 512}, seed=7)
    damaged = cache / "dev/ddd/ddd_s003_t002.npy"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))

    with pytest.raises(UserError, match=rf"{damaged}: sha256 differs from the manifest"):
        s3.push(cache, url, endpoint_url=endpoint, workers=1)
    # The old dev manifest was withdrawn before any new file went up; train's is untouched.
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "c/dev/manifest.json" not in keys
    assert "c/train/manifest.json" in keys


def test_untrusted_manifest_paths_are_refused(tmp_path, endpoint, bucket, client):
    manifest = {**SETTINGS,
                "recordings": [{"file": "../../escape.npy", "sha256": "0" * 64, "bytes": 1}]}  # fmt: skip
    client.put_object(Bucket=bucket, Key="c/train/manifest.json", Body=json.dumps(manifest))
    with pytest.raises(UserError, match="leaves the split folder"):
        s3.pull(f"s3://{bucket}/c", tmp_path / "out", endpoint_url=endpoint)
    assert not (tmp_path / "escape.npy").exists()


def test_wrong_bucket_or_prefix_fails_before_anything_is_written(cache, tmp_path, endpoint, bucket):
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"^s3://no-such-bucket-x: no such bucket$"):
        s3.pull("s3://no-such-bucket-x/c", out, endpoint_url=endpoint)
    with pytest.raises(UserError, match=r"^s3://no-such-bucket-x: no such bucket$"):
        s3.push(cache, "s3://no-such-bucket-x/c", endpoint_url=endpoint)
    s3.push(cache, f"s3://{bucket}/right", endpoint_url=endpoint)
    with pytest.raises(UserError, match=rf"s3://{bucket}/wrong: no <split>/manifest.json"):
        s3.pull(f"s3://{bucket}/wrong", out, endpoint_url=endpoint)
    assert not out.exists()


def test_missing_credentials_fail_before_any_transfer(cache, tmp_path, endpoint, monkeypatch):
    for name in CREDENTIALS:
        monkeypatch.delenv(name)
    with pytest.raises(UserError, match="no AWS credentials found"):
        s3.pull("s3://any-bucket/c", tmp_path / "out", endpoint_url=endpoint)
    with pytest.raises(UserError, match="no AWS credentials found"):
        s3.push(cache, "s3://any-bucket/c", endpoint_url=endpoint)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "bucket/x"])
def test_bad_urls_are_user_errors(url):
    with pytest.raises(UserError, match="s3://"):
        s3.parse_s3_url(url)


def test_push_needs_a_cache_root(cache, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="pass the cache root"):
        s3.push(cache / "train", "s3://b/c")
    with pytest.raises(UserError, match=r"no <split>/manifest\.json here"):
        s3.push(tmp_path / "empty", "s3://b/c")


def test_cli_round_trip_and_one_line_error(cache, tmp_path, endpoint, bucket):
    env = {**os.environ}

    def szdet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "szdet.cli", "cache", *args, "--endpoint-url", endpoint],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    assert szdet("push", str(cache), f"s3://{bucket}/c").returncode == 0
    assert szdet("pull", f"s3://{bucket}/c", str(tmp_path / "out")).returncode == 0
    assert tree(tmp_path / "out") == tree(cache)
    failed = szdet("pull", f"s3://{bucket}/nothing-here", str(tmp_path / "out2"))
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"szdet: error: s3://{bucket}/nothing-here: no <split>/manifest.json under this prefix "
        "(wrong prefix, or the cache was never pushed)"
    ]
