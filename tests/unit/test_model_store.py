"""Base weights from an s3:// prefix, against a real S3 server (SeaweedFS, on loopback)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from llama_assets.training.base_model import build_tiny_llama, load_base_model
from llama_assets.training.pipeline import load_checkpoint, train_and_save
from llama_assets.training.tokenizer import train_bpe_tokenizer
from llama_assets.training.variants import VARIANTS
from resources.model_store import fetch_s3_prefix
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus

PROBE = torch.tensor([[5, 6, 7, 8]])


@pytest.fixture
def s3(s3_env, monkeypatch, tmp_path):
    """The test S3 server (SeaweedFS) with a bucket `weights`, and a local data root."""
    monkeypatch.setenv("LLAMA_DATA_ROOT", str(tmp_path / "data"))
    client = s3_env.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="weights")
    yield client
    for obj in client.list_objects_v2(Bucket="weights", Prefix="llama/").get("Contents", []):
        client.delete_object(Bucket="weights", Key=obj["Key"])


def upload_tiny_llama(client, tmp_path, texts) -> torch.nn.Module:
    tokenizer = train_bpe_tokenizer(texts, SMALL.vocab_size)
    model = build_tiny_llama(SMALL, tokenizer, seed=5)
    local = tmp_path / "upload"
    model.save_pretrained(local)
    tokenizer.save_pretrained(local)
    for path in local.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "weights", f"llama/tiny/{path.relative_to(local)}")
    return model


def test_base_weights_load_from_s3_once_then_from_the_cache(s3, tmp_path, monkeypatch):
    from llama_assets.base.store import S3Store

    client = s3
    model = upload_tiny_llama(client, tmp_path, synthetic_corpus(40))
    variant = dataclasses.replace(VARIANTS["llama-3.2-1b"], dtype="float32")

    loaded, tokenizer = load_base_model(variant, "s3://weights/llama/tiny")
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=PROBE).logits, model(input_ids=PROBE).logits)
    assert (tmp_path / "data/cache/models/weights/llama/tiny/.complete").is_file()

    def no_request(*args, **kwargs):
        raise AssertionError("the mirror is complete: no request may reach S3 again")

    monkeypatch.setattr(S3Store, "list", no_request)
    monkeypatch.setattr(S3Store, "download", no_request)
    again, _ = load_base_model(variant, "s3://weights/llama/tiny")
    with torch.no_grad():
        assert torch.equal(again(input_ids=PROBE).logits, model(input_ids=PROBE).logits)


def test_an_empty_prefix_is_an_error_and_leaves_no_cache(s3, tmp_path):
    with pytest.raises(FileNotFoundError, match="no objects under s3://weights/missing"):
        fetch_s3_prefix("s3://weights/missing")
    assert not (tmp_path / "data/cache/models/weights/missing").exists()


def test_a_real_variant_fine_tunes_from_s3_weights(s3, tmp_path, monkeypatch):
    client = s3
    texts = synthetic_corpus(60)
    upload_tiny_llama(client, tmp_path, texts)
    monkeypatch.setenv("LLAMA_WEIGHTS_LLAMA_3_2_1B", "s3://weights/llama/tiny")
    variant = dataclasses.replace(VARIANTS["llama-3.2-1b"], dtype="float32")
    cfg = dataclasses.replace(SHORT, modules_to_save=())
    trained = train_and_save(
        variant, cfg, texts, "data-v1", tmp_path / "models", torch.device("cpu")
    )
    base, finetuned, _ = load_checkpoint(variant, trained.path, torch.device("cpu"))
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=PROBE).logits, finetuned(input_ids=PROBE).logits)
