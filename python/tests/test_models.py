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


def test_init_save_load_striped_hyena(tmp_path):
    """A random StripedHyenaLM from a config: its logits are causal (a prefix's logits are the prefix of the logits),
    generate continues greedily, and a saved model loads back through load_model with the same logits."""
    cfg = {"model_type": "stripedhyena", "hidden_size": 16, "num_layers": 2, "vocab_size": 40, "num_attention_heads": 2,
           "attn_layer_idxs": [1], "hyena_layer_idxs": [0], "inner_mlp_size": 32, "max_seqlen": 16}
    model = ssm.StripedHyenaLM.init(json.dumps(cfg), 3)
    ids = np.array([[1, 5, 9, 2, 30, 7, 11, 3, 0, 19, 21, 4, 8, 6, 2, 1, 39, 12, 5, 5]], dtype=np.int64)  # > max_seqlen
    full = model.logits(ids)
    np.testing.assert_allclose(model.logits(ids[:, :7]), full[:, :7], rtol=1e-5, atol=1e-5)
    out = model.generate([1, 5, 9], 4, stop_ids=[])
    assert len(out) == 4 and out[0] == int(np.argmax(model.logits(np.array([[1, 5, 9]]))[0, -1, :40]))
    model.save(str(tmp_path / "sh"))
    back = ssm.load_model(tmp_path / "sh")
    assert isinstance(back, ssm.StripedHyenaLM)
    np.testing.assert_array_equal(back.logits(ids), full)
    with pytest.raises(ssm.Error, match=r"config_json"):
        ssm.StripedHyenaLM.init("{not json", 0)
    with pytest.raises(ssm.Error, match=r"hyena_filter_groups"):
        ssm.StripedHyenaLM.init(json.dumps({**cfg, "hyena_filter_groups": 4}), 0)
