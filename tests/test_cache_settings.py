"""The cache's typed documents and its one refusal (szdet/data/cache_settings.py, manifest.py): a
cache of another format or version, montage or preprocessing is refused in one line naming the
file and both values, wherever it is read (opened to train or score, built into, pulled); build
records are read back typed, and a malformed one is built again."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cache_support import write_split
from edf_factory import write_recording
from szdet.config import PreprocessConfig
from szdet.data.cache import build_cache, claim_split_dir
from szdet.data.cache_settings import PREPROCESS_FILE, CacheSettings
from szdet.data.manifest import (
    BuildRecord,
    CacheSplit,
    parse_manifest,
    read_build_record,
    write_build_record,
)
from szdet.errors import UserError

PRE = PreprocessConfig()
OTHER = PRE.model_copy(update={"notch_hz": None})
OPEN_REMEDY = "build a cache with this config (szdet cache build)"
BUILD_REMEDY = "use another --out, or delete this folder (a cache never mixes settings)"


@pytest.fixture
def split_dir(tmp_path) -> Path:
    """A referential split written in the real format, as PRE builds it."""
    return write_split(tmp_path / "cache", "train", [(60.0, [(10.0, 20.0)])])


def refusal(call: Callable[[], object]) -> str:
    with pytest.raises(UserError) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_open_with_a_montage_alone_refuses_a_cache_of_another(split_dir):
    root = split_dir.parent
    assert refusal(lambda: CacheSplit.open(root, "train", montage="bipolar")) == (
        f"{split_dir / 'manifest.json'}: cache built for data.montage referential, this config's "
        f"is bipolar; {OPEN_REMEDY}"
    )
    assert CacheSplit.open(root, "train", montage="referential").montage == "referential"
    assert CacheSplit.open(root, "train", preprocess=PRE, montage="referential").recordings


def test_open_names_both_hashes_and_the_fields_that_differ(split_dir):
    manifest, root = split_dir / "manifest.json", split_dir.parent
    assert refusal(
        lambda: CacheSplit.open(root, "train", preprocess=OTHER, montage="referential")
    ) == (
        f"{manifest}: cache built with preprocess settings {PRE.fingerprint('referential')}, this "
        f"config's are {OTHER.fingerprint('referential')}: notch_hz 60.0 (wanted None); "
        f"{OPEN_REMEDY}"
    )
    # the same fields hashed otherwise (another preprocessing algorithm); without a montage, the
    # settings are hashed for the cache's own
    document = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(document | {"preprocess_hash": "0" * 16}))
    assert refusal(lambda: CacheSplit.open(root, "train", preprocess=PRE)) == (
        f"{manifest}: cache built with preprocess settings {'0' * 16}, this config's are "
        f"{PRE.fingerprint('referential')}: the same fields, another preprocessing algorithm; "
        f"{OPEN_REMEDY}"
    )


def test_a_cache_of_another_format_version_is_refused_wherever_it_is_read(split_dir):
    manifest = split_dir / "manifest.json"
    v1 = json.loads(manifest.read_text()) | {"format_version": 1}
    manifest.write_text(json.dumps(v1))
    line = "cache format szdet-cache v1, expected szdet-cache v2"
    assert refusal(lambda: CacheSplit.open(split_dir.parent, "train")) == (
        f"{manifest}: {line}; rebuild the cache"
    )
    url = "s3://bucket/cache/train/manifest.json"  # a pull or push reads it the same way
    assert refusal(lambda: parse_manifest(json.dumps(v1).encode(), url)) == (
        f"{url}: {line}; rebuild the cache"
    )
    # building into it: the manifest speaks for a pulled cache without preprocess.json
    assert refusal(lambda: claim_split_dir(split_dir, PRE, "referential")) == (
        f"{manifest}: {line}; {BUILD_REMEDY}"
    )
    assert not (split_dir / PREPROCESS_FILE).exists()
    assert refusal(lambda: parse_manifest(b'{"format": "szdet-cache", "format_version": 2}', url))


def test_building_into_a_folder_refuses_another_montage_or_preprocessing(split_dir):
    claim_split_dir(split_dir, PRE, "referential")  # a pulled cache: its manifest agrees
    claimed = json.loads((split_dir / PREPROCESS_FILE).read_text())
    assert claimed == CacheSettings.of(PRE, "referential").to_json()
    assert set(claimed) == {"format", "format_version", "montage", "preprocess_hash", "preprocess"}
    preprocess_json = split_dir / PREPROCESS_FILE
    assert refusal(lambda: claim_split_dir(split_dir, PRE, "bipolar")) == (
        f"{preprocess_json}: cache built for data.montage referential, this config's is "
        f"bipolar; {BUILD_REMEDY}"
    )
    assert refusal(lambda: claim_split_dir(split_dir, OTHER, "referential")) == (
        f"{preprocess_json}: cache built with preprocess settings "
        f"{PRE.fingerprint('referential')}, this config's are {OTHER.fingerprint('referential')}: "
        f"notch_hz 60.0 (wanted None); {BUILD_REMEDY}"
    )
    preprocess_json.write_text("{not json")
    assert refusal(lambda: claim_split_dir(split_dir, PRE, "referential")).startswith(
        f"{preprocess_json}: unreadable ("
    )


def test_build_records_read_back_typed_and_a_malformed_one_is_none(split_dir, tmp_path):
    recording = CacheSplit.open(split_dir.parent, "train").recordings[0]
    built = BuildRecord("edf/a.edf", {"a.edf": 12, "a.csv_bi": "f" * 64}, "h", recording=recording)
    skipped = BuildRecord("edf/b.edf", {"b.edf": 3}, "h", skipped="no .csv_bi beside it")
    for record in (built, skipped):
        write_build_record(tmp_path / "record.json", record)
        assert read_build_record(tmp_path / "record.json") == record
    assert set(json.loads((tmp_path / "record.json").read_text())) == {
        "source", "sources", "preprocess_hash", "skipped",
    }  # fmt: skip
    for text in ("{", "[]", '{"source": "x"}', json.dumps(built.to_json() | {"recording": {}})):
        (tmp_path / "record.json").write_text(text)
        assert read_build_record(tmp_path / "record.json") is None
    assert read_build_record(tmp_path / "missing.json") is None


def test_a_malformed_build_record_is_built_again(tmp_path):
    write_recording(tmp_path / "corpus", "train", "aaaaaaaa", seconds=60)

    def build():
        return build_cache(tmp_path / "corpus", "train", tmp_path / "cache", PRE, 1, None, None)

    assert build().built == 1
    (record,) = (tmp_path / "cache" / "train" / "aaaaaaaa").glob("*.json")
    whole = json.loads(record.read_text())
    record.write_text(json.dumps(whole | {"recording": {"file": whole["recording"]["file"]}}))
    report = build()
    assert (report.built, report.reused) == (1, 0)
    assert json.loads(record.read_text()) == whole
