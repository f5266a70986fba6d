"""Keys: saved without the secret, checked when it comes back, refused when settings are wrong."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest
import torch

from provenance.errors import ConfigError, TailguardWarning
from provenance.watermark import WatermarkKey, WatermarkScorer


def test_key_saved_without_secret_cannot_detect(world: dict, tmp_path: Path) -> None:
    key = world["key"]
    public = key.save(tmp_path / "key.json")
    text = public.read_text()
    assert str(key.hashing_key) not in text
    record = json.loads(text)
    assert record["key_fingerprint"] == key.key_fingerprint and "hashing_key" not in record

    loaded = WatermarkKey.load(public)
    assert not loaded.has_secret and loaded.key_fingerprint == key.key_fingerprint
    with pytest.raises(ConfigError, match="saved without its secret.*hashing_key="):
        WatermarkScorer(loaded, world["tokenizer"])

    assert WatermarkKey.load(public, hashing_key=key.hashing_key) == key
    assert WatermarkKey.load(public, hashing_key=str(key.hashing_key)) == key  # from an env var
    with pytest.raises(ConfigError, match="does not match"):
        WatermarkKey.load(public, hashing_key=key.hashing_key + 1)

    private = key.save(tmp_path / "secret.json", include_secret=True)
    assert WatermarkKey.load(private) == key
    with pytest.raises(ConfigError, match="does not match"):
        WatermarkKey.load(private, hashing_key=key.hashing_key + 1)


def test_a_key_saved_with_its_secret_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    key = WatermarkKey.generate("tok", vocab_size=100, seed=3)
    public = key.save(tmp_path / "key.json")
    assert stat.S_IMODE(public.stat().st_mode) & 0o044  # publishable: others may read it
    private = key.save(tmp_path / "secret.json", include_secret=True)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    replaced = key.save(public, include_secret=True)  # over a world-readable file
    assert stat.S_IMODE(replaced.stat().st_mode) == 0o600
    assert WatermarkKey.load(replaced) == key
    old_umask = os.umask(0o277)  # even a umask that takes the owner's write bit
    try:
        key.save(private, include_secret=True)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.json", "secret.json"]


def test_a_missing_secret_names_the_cli_option_and_the_python_call(tmp_path: Path) -> None:
    key = WatermarkKey.generate("tok", vocab_size=100, seed=3)
    loaded = WatermarkKey.load(key.save(tmp_path / "key.json"))
    with pytest.raises(ConfigError) as caught:
        loaded.generation_config()
    message = str(caught.value)
    assert "\n" not in message
    assert "--watermark-secret or TAILGUARD_WATERMARK_SECRET" in message
    assert "WatermarkKey.load(path, hashing_key=<the secret>)" in message


def test_loaded_key_finds_its_tokenizer_by_name(world: dict, tmp_path: Path) -> None:
    path = world["key"].save(tmp_path / "key.json", include_secret=True)
    scorer = WatermarkScorer(WatermarkKey.load(path))  # the tokenizer is loaded from key.tokenizer
    assert all(r.detected for r in scorer.score(world["generated"][:3]))


def test_a_torch_that_draws_other_green_lists_warns(world: dict, tmp_path: Path) -> None:
    path = world["key"].save(tmp_path / "key.json")
    record = json.loads(path.read_text())
    record["greenlist_check"] = "0" * 16
    path.write_text(json.dumps(record))
    with pytest.warns(TailguardWarning, match="different green lists"):
        WatermarkKey.load(path, hashing_key=world["key"].hashing_key)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        world["key"].save(path)
        WatermarkKey.load(path, hashing_key=world["key"].hashing_key)


def test_invalid_settings_name_the_fix(world: dict) -> None:
    key, tok = world["key"], world["tokenizer"]
    with pytest.raises(ConfigError, match=r"z_threshold must be > 0, got -1"):
        WatermarkScorer(key, tok, z_threshold=-1)
    with pytest.raises(ConfigError, match="min_tokens must be an integer >= 1"):
        WatermarkScorer(key, tok, min_tokens=0)
    with pytest.raises(ConfigError, match="greenlist_ratio must be in"):
        WatermarkKey(5, "tok", 1000, greenlist_ratio=1.5)
    with pytest.raises(ConfigError, match="seeding_scheme"):
        WatermarkKey(5, "tok", 1000, seeding_scheme="hash")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            WatermarkScorer(key, tok, device="cuda")
    cuda_key = WatermarkKey(5, "tok", 1000, rng_device="cuda")
    with pytest.raises(ConfigError, match="different green lists"):
        WatermarkScorer(cuda_key, tok, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA GPU|machine with a CUDA GPU"):
            WatermarkScorer(cuda_key, tok)


