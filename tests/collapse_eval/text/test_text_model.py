"""The small GPT-2: recipe, seeded training that beats the baselines, perplexities, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from collapse_eval.text.model import (
    LMRecipe,
    load_model,
    load_pretrained,
    load_recipe,
    lr_factor,
    new_model,
    perplexity,
    save_model,
    sequence_perplexities,
    train_lm,
)
from collapse_eval.text.text_metrics import ngram_baselines
from provenance.errors import ConfigError, InputError

SMALL = LMRecipe(vocab_size=512, n_positions=32, n_embd=32, n_layer=1, n_head=2, block=32,
                 batch_size=8, epochs=2, lr=1e-2)


def test_the_default_recipe_is_the_documented_model() -> None:
    recipe = LMRecipe()
    model = new_model(recipe, seed=0)
    assert sum(p.numel() for p in model.parameters()) == 929_280  # 0.93M
    cfg = model.config
    assert (cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_layer, cfg.n_head) == (
        4096, 64, 128, 2, 2)
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied
    assert abs(float(model.transformer.wte.weight.detach().std()) - 0.1) < 0.005
    assert (recipe.lr, recipe.betas, recipe.weight_decay, recipe.batch_size, recipe.epochs) == (
        4e-3, (0.9, 0.99), 0.1, 8, 3)
    assert LMRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_bad_recipes_are_refused() -> None:
    with pytest.raises(ConfigError, match="n_embd .* multiple of n_head"):
        LMRecipe(n_embd=130, n_head=4)
    with pytest.raises(ConfigError, match="unknown LMRecipe fields: colour"):
        LMRecipe.from_dict({"colour": 1})


def test_the_schedule_warms_up_then_decays_to_the_floor() -> None:
    recipe = LMRecipe(warmup_fraction=0.1, final_lr_fraction=0.1)
    factors = [lr_factor(s, 200, recipe) for s in range(200)]
    assert factors[0] == pytest.approx(0.05) and factors[19] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[20:], factors[21:], strict=False))
    assert factors[-1] == pytest.approx(0.1)


def test_training_beats_the_unigram_and_bigram_baselines(tiny_lm) -> None:
    baselines = ngram_baselines(tiny_lm.train, tiny_lm.valid, 512)
    ppl = tiny_lm.report.valid_perplexity
    assert ppl < tiny_lm.initial_valid_ppl / 5
    assert ppl < baselines["unigram_ppl"] / 2
    assert ppl < baselines["bigram_ppl"]
    assert perplexity(tiny_lm.model, tiny_lm.valid) == pytest.approx(ppl, rel=1e-9)
    report = tiny_lm.report
    assert report.steps == 2 * math.ceil(tiny_lm.train.shape[0] / 16) and report.tokens_per_s > 0


def test_the_best_epoch_on_validation_data_is_kept(tiny_lm) -> None:
    blocks = tiny_lm.train[:256]
    model = new_model(SMALL, seed=3)
    # A learning rate this high diverges after the first epoch; the first epoch must be kept.
    recipe = LMRecipe(**{**SMALL.to_dict(), "lr": 0.5, "epochs": 3, "warmup_fraction": 0.0,
                         "final_lr_fraction": 1.0, "grad_clip": 0.0})
    report = train_lm(model, blocks, recipe=recipe, seed=0, valid_blocks=tiny_lm.valid)
    valid = [row["valid_perplexity"] for row in report.history]
    assert report.best_epoch == 1 + int(np.argmin(valid))
    assert report.valid_perplexity == min(valid)
    assert perplexity(model, tiny_lm.valid) == pytest.approx(min(valid), rel=1e-9)


def test_the_same_seed_gives_the_same_weights(tiny_lm) -> None:
    blocks = tiny_lm.train[:96]

    def trained(seed: int) -> dict[str, torch.Tensor]:
        model = new_model(SMALL, seed=seed)
        train_lm(model, blocks, recipe=SMALL, seed=seed)
        return model.state_dict()

    first, again, other = trained(1), trained(1), trained(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["transformer.wte.weight"], other["transformer.wte.weight"])


def test_training_leaves_the_callers_random_state_alone(tiny_lm) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_lm(new_model(SMALL, seed=0), tiny_lm.train[:16], recipe=SMALL)
    assert torch.equal(torch.rand(3), expected)


def test_perplexity_is_the_mean_next_token_loss(tiny_lm) -> None:
    blocks = tiny_lm.test[:10]
    with torch.no_grad():
        logits = tiny_lm.model(blocks).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, 512), blocks[:, 1:].reshape(-1), reduction="none")
    assert perplexity(tiny_lm.model, blocks, batch_size=3) == pytest.approx(
        math.exp(float(nll.mean())), rel=1e-5)
    per_block = sequence_perplexities(tiny_lm.model, blocks, batch_size=4)
    expected = torch.exp(nll.view(10, -1).double().mean(dim=1)).numpy()
    np.testing.assert_allclose(per_block, expected, rtol=1e-5)
    # Equal-length blocks: the overall perplexity is the geometric mean of the per-block ones.
    assert math.exp(np.log(per_block).mean()) == pytest.approx(
        perplexity(tiny_lm.model, blocks), rel=1e-6)


def test_save_and_load_round_trip_through_safetensors(tiny_lm, tmp_path) -> None:
    folder = save_model(tiny_lm.model, tmp_path / "gen0", recipe=tiny_lm.recipe,
                        tokenizer=tiny_lm.tokenizer)
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and "recipe.json" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    loaded = load_model(folder)
    with torch.no_grad():
        assert torch.equal(loaded(tiny_lm.test[:4]).logits, tiny_lm.model(tiny_lm.test[:4]).logits)
    assert load_recipe(folder) == tiny_lm.recipe
    save_model(loaded, folder)  # overwriting an existing checkpoint works
    assert load_recipe(folder) is None


def test_load_pretrained_reads_a_local_folder_offline(tiny_lm, tmp_path) -> None:
    folder = save_model(tiny_lm.model, tmp_path / "m", tokenizer=tiny_lm.tokenizer)
    loaded = load_pretrained(folder, device="cpu")
    assert loaded.device == "cpu" and len(loaded.tokenizer) == 512
    assert loaded.model.dtype == torch.float32
    # A pretrained model fine-tunes with the same training function.
    before = perplexity(loaded.model, tiny_lm.valid)
    recipe = LMRecipe(**{**tiny_lm.recipe.to_dict(), "lr": 1e-3})
    report = train_lm(loaded.model, tiny_lm.train[:128], recipe=recipe, valid_blocks=tiny_lm.valid)
    assert report.valid_perplexity <= before * 1.05
    with pytest.raises(InputError, match="does not exist|cannot load"):
        load_pretrained(tmp_path / "missing")
    with pytest.raises(InputError, match="config.json is missing"):
        load_model(tmp_path)


def test_bad_blocks_are_refused(tiny_lm) -> None:
    model = new_model(SMALL, seed=0)
    with pytest.raises(InputError, match="2-D LongTensor"):
        train_lm(model, tiny_lm.train[0], recipe=SMALL)
    with pytest.raises(InputError, match=r"token ids must be in \[0, 512\)"):
        perplexity(model, tiny_lm.train[:2] + 600)
    with pytest.raises(ConfigError, match="exceed the model's 32 positions"):
        train_lm(model, torch.zeros((4, 40), dtype=torch.long), recipe=SMALL)


@pytest.mark.slow
def test_generation_0_on_the_default_corpus_beats_the_bigram_clearly() -> None:
    from collapse_eval.text.data import load_text_corpus
    from collapse_eval.text.tokenizer import encode_blocks, train_tokenizer

    corpus = load_text_corpus()
    tokenizer = train_tokenizer(corpus.train, 4096)
    train, valid, test = (encode_blocks(tokenizer, corpus.split(s), 64)
                          for s in ("train", "valid", "test"))
    model = new_model(LMRecipe(), seed=0)
    report = train_lm(model, train, recipe=LMRecipe(), seed=0, valid_blocks=valid)
    assert report.valid_perplexity < 0.8 * ngram_baselines(train, valid, 4096)["bigram_ppl"]
    assert perplexity(model, test) < 0.8 * ngram_baselines(train, test, 4096)["bigram_ppl"]
