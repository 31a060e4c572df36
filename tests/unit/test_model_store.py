"""Base weights from an s3:// prefix, against a real S3-compatible server (moto, on loopback)."""

from __future__ import annotations

import dataclasses
import socket

import boto3
import pytest
import torch
from moto.server import ThreadedMotoServer

from llama_assets.training.base_model import build_tiny_llama, load_base_model
from llama_assets.training.pipeline import load_checkpoint, train_and_save
from llama_assets.training.tokenizer import train_bpe_tokenizer
from llama_assets.training.variants import VARIANTS
from resources.model_store import fetch_s3_prefix
from tests.unit.test_training import SHORT, SMALL, synthetic_corpus

PROBE = torch.tensor([[5, 6, 7, 8]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch, tmp_path):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("LLAMA_DATA_ROOT", str(tmp_path / "data"))
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    client.create_bucket(Bucket="weights")
    yield client, server
    server.stop()


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


def test_base_weights_load_from_s3_once_then_from_the_cache(s3, tmp_path):
    client, server = s3
    model = upload_tiny_llama(client, tmp_path, synthetic_corpus(40))
    variant = dataclasses.replace(VARIANTS["llama-3.2-1b"], dtype="float32")

    loaded, tokenizer = load_base_model(variant, "s3://weights/llama/tiny")
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=PROBE).logits, model(input_ids=PROBE).logits)
    assert (tmp_path / "data/cache/models/weights/llama/tiny/.complete").is_file()

    server.stop()  # the mirror is complete: no request reaches S3 again
    again, _ = load_base_model(variant, "s3://weights/llama/tiny")
    with torch.no_grad():
        assert torch.equal(again(input_ids=PROBE).logits, model(input_ids=PROBE).logits)
    server.start()


def test_an_empty_prefix_is_an_error_and_leaves_no_cache(s3, tmp_path):
    with pytest.raises(FileNotFoundError, match="no objects under s3://weights/missing"):
        fetch_s3_prefix("s3://weights/missing")
    assert not (tmp_path / "data/cache/models/weights/missing").exists()


def test_a_real_variant_fine_tunes_from_s3_weights(s3, tmp_path, monkeypatch):
    client, _ = s3
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
