"""The language models and the tokenizer through the bindings, against the committed goldens (Hugging Face
transformers' logits and greedy continuations, tokenizers' ids)."""

import json

import numpy as np
import pytest
import torch

import ssm


@pytest.mark.parametrize("rel,cls", [("mamba/tiny", ssm.MambaLM), ("mamba2/heads4", ssm.Mamba2LM),
                                     ("rwkv/tiny", ssm.RwkvLM), ("rwkv/wide", ssm.RwkvLM),
                                     ("jamba/tiny", ssm.JambaLM), ("jamba/tied", ssm.JambaLM)])
def test_logits_and_generate_match_golden(data_dir, rel, cls):
    model = ssm.load_model(data_dir / rel)
    assert isinstance(model, cls)
    golden = json.loads((data_dir / rel / "golden.json").read_text())
    ids = np.array([golden["tokens"]], dtype=np.int64)
    logits = model.logits(ids)
    assert isinstance(logits, np.ndarray) and logits.shape == (1, ids.shape[1], model.padded_vocab)
    np.testing.assert_allclose(logits[0, :, :model.vocab_size], np.array(golden["logits"]), rtol=1e-4, atol=1e-4)
    logits_t = model.logits(torch.from_numpy(ids).to(torch.int32))
    assert isinstance(logits_t, torch.Tensor)
    np.testing.assert_allclose(logits_t.numpy(), logits, rtol=1e-6, atol=1e-6)
    out = model.generate(golden["prompt"], len(golden["continuation"]))
    assert out == golden["continuation"]


def test_model_properties_and_errors(data_dir):
    model = ssm.MambaLM.load(str(data_dir / "mamba/tiny"), "f32")
    assert model.vocab_size == 256 and model.d_model == 64 and model.n_layer == 2 and model.weight_bytes > 0
    model.set_threads(1)
    assert model.threads == 1
    with pytest.raises(ssm.Error, match=r"MambaLM::logits: argument 'ids'"):
        model.logits(np.zeros((1, 3), np.float32))
    with pytest.raises(ssm.Error, match=r"weight_dtype"):
        ssm.MambaLM.load(str(data_dir / "mamba/tiny"), "f8")


def test_tokenizer_matches_golden(data_dir):
    tok = ssm.Tokenizer.load(str(data_dir / "tokenizer/neox/tokenizer.json"))
    golden = json.loads((data_dir / "tokenizer/golden.json").read_text())["variants"]["neox"]
    text = (data_dir / "tokenizer/text.txt").read_bytes().decode("utf-8")  # as is: no newline translation
    assert tok.encode(text) == golden["whole"]
    assert tok.encode(text, add_special_tokens=False) == golden["whole_no_special"]
    assert tok.decode(golden["whole"]) == golden["decode_whole"]
    assert tok.vocab_size > 100 and tok.token_to_id(tok.id_to_token(100)) == 100


def test_text_in_text_out(data_dir):
    model = ssm.load_model(data_dir / "mamba/tiny")
    tok = ssm.Tokenizer.load(str(data_dir / "mamba/tiny/tokenizer.json"))
    ids = tok.encode("ab")
    out = model.generate(ids, 5, stop_ids=[])
    assert len(out) == 5 and isinstance(tok.decode(out), str)
