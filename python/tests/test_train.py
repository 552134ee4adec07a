"""ssm.train.Trainer: a model over named mixers learns a task from the caller's batches, a resumed run equals an
uninterrupted one, and bad input is an ssm.Error naming the argument."""

import json
import math

import numpy as np
import pytest
import torch

import ssm


def copy_batch(rng, b, l, vocab):
    """The shifted copy: each target is the previous input token (the first is not counted)."""
    ids = rng.integers(0, vocab, size=(b, l), dtype=np.int64)
    targets = np.full((b, l), -100, dtype=np.int64)
    targets[:, 1:] = ids[:, :-1]
    return ids, targets


def trainer(**kw):
    args = dict(vocab=8, d_model=16, mixers=["mamba2"], heads=2, d_state=4, lr=1e-2, warmup=10, steps=120, seed=3,
                threads=1)
    args.update(kw)
    return ssm.train.Trainer(**args)


def test_a_mamba2_model_learns_the_shifted_copy():
    t = trainer()
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(120):
        r = t.step(*copy_batch(rng, 8, 12, 8))
        losses.append(r["loss"])
        assert r["count"] == 8 * 11 and 0 <= r["correct"] <= r["count"] and math.isfinite(r["grad_norm"])
    assert t.steps == 120 and r["step"] == 120
    assert r["lr"] == pytest.approx(t.lr_at(119))
    assert losses[0] > 0.8 * math.log(8)
    assert losses[-1] < 0.05 * math.log(8)
    ev = t.evaluate(*copy_batch(rng, 8, 40, 8))  # a longer sequence than trained on
    assert ev["accuracy"] > 0.99
    ids, _ = copy_batch(rng, 2, 5, 8)
    logits = t.logits(ids)
    assert isinstance(logits, np.ndarray) and logits.shape == (2, 5, 8) and logits.dtype == np.float32
    assert (logits[:, 1:].argmax(-1) == ids[:, :-1]).all()
    assert isinstance(t.logits(torch.from_numpy(ids)), torch.Tensor)


def test_parameters_are_named_as_in_a_checkpoint():
    t = trainer(mixers=["mamba2", "attention", "hyena"], max_len=16)
    p = t.parameters()
    assert list(p) == t.parameter_names()
    assert "layers.0.mixer.A_log" in p and "layers.0.mixer.norm.weight" in p and "layers.0.norm.weight" in p
    assert "layers.1.mixer.q_proj.weight" in p and "embedding" in p and "lm_head" in p
    assert "layers.2.mixer.filter_fn.implicit_filter.6.weight" in p
    assert "layers.2.mixer.filter_fn.modulation.deltas" not in p  # not trained (safari: lr 0)
    assert sum(v.size for v in p.values()) == t.num_parameters
    assert p["layers.0.mixer.A_log"].dtype == np.float32


def test_s4_layers_train_under_their_published_names():
    t = trainer(mixers=["s4d_layer", "s4_layer"], d_state=8, max_len=12, lr=3e-2, warmup=5, steps=150)
    p = t.parameters()
    assert p["layers.0.mixer.kernel.log_A_real"].shape == (16 * 4,)  # (h, N/2)
    assert p["layers.1.mixer.kernel.P"].shape == (16 * 4 * 2,)  # (h, N/2, [Re, Im])
    assert "layers.1.mixer.C" in p and "layers.0.mixer.output_linear.weight" in p
    rng = np.random.default_rng(4)
    first = t.step(*copy_batch(rng, 4, 12, 8))["loss"]
    for _ in range(149):  # the shifted copy: 2.43 -> 0.009 (ln 8 = 2.08 is chance)
        last = t.step(*copy_batch(rng, 4, 12, 8))["loss"]
    assert last < 0.1 * first
    after = t.parameters()  # the kernels' parameters moved, and Re A stays negative by construction
    assert not np.array_equal(after["layers.0.mixer.kernel.log_A_real"], p["layers.0.mixer.kernel.log_A_real"])
    with pytest.raises(ssm.Error, match=r"argument 'd_state'"):
        trainer(mixers=["s4d_layer"], d_state=7)


def test_rwkv4_striped_hyena_and_experts_train_under_their_checkpoint_names():
    t = trainer(mixers=["rwkv4", "rwkv4_channel", "striped_hyena", "moe"], d_state=3, max_len=16, lr=1e-2, warmup=5,
                steps=100)
    p = t.parameters()
    assert p["layers.3.mixer.router.weight"].shape == (8 * 16,)  # 8 experts (E, H)
    assert p["layers.3.mixer.experts.gate_up_proj"].shape == (8 * 2 * 32 * 16,)  # (E, 2 I, H), I = 2 d_model
    assert p["layers.0.mixer.time_decay"].shape == (16,) and "layers.0.mixer.output.weight" in p
    assert p["layers.1.mixer.key.weight"].shape == (64 * 16,) and "layers.1.mixer.time_decay" not in p
    assert p["layers.2.mixer.filter.poles"].shape == (16 * 3 * 2,)  # (H, S, 1, [re, im])
    rng = np.random.default_rng(6)
    first = t.step(*copy_batch(rng, 4, 12, 8))["loss"]
    for _ in range(99):
        last = t.step(*copy_batch(rng, 4, 12, 8))["loss"]
    assert last < 0.1 * first
    assert not np.array_equal(t.parameters()["layers.2.mixer.filter.poles"], p["layers.2.mixer.filter.poles"])


def test_a_checkpoint_fine_tunes_and_goes_back(data_dir, tmp_path):
    lm = ssm.load_model(data_dir / "mamba" / "tiny")
    t = ssm.train.Trainer.from_pretrained(data_dir / "mamba" / "tiny", lr=3e-3, warmup=0, steps=10)
    rng = np.random.default_rng(5)
    ids, targets = copy_batch(rng, 2, 11, lm.vocab_size)
    assert np.array_equal(t.logits(ids), lm.logits(ids))  # the same weights, the same ops
    assert "layers.0.mixer.A_log" in t.parameters() and "lm_head" not in t.parameters()  # tied, as the checkpoint
    losses = [t.step(ids, targets)["loss"] for _ in range(10)]
    assert losses[-1] < 0.8 * losses[0]
    tuned = t.to_model()
    assert isinstance(tuned, ssm.MambaLM)
    assert np.array_equal(tuned.logits(ids), t.logits(ids))
    tuned.save(str(tmp_path / "tuned"))
    assert np.array_equal(ssm.load_model(tmp_path / "tuned").logits(ids), t.logits(ids))
    # a saved training state records the checkpoint's whole config: the same checkpoint's trainer resumes it exactly,
    # a trainer of same-sized mixers (the same rates) refuses it
    state = str(tmp_path / "state.safetensors")
    t.save(state)
    resumed = ssm.train.Trainer.from_pretrained(data_dir / "mamba" / "tiny", lr=3e-3, warmup=0, steps=10)
    resumed.load(state)
    assert resumed.step(ids, targets)["loss"] == t.step(ids, targets)["loss"]
    mixers = ssm.train.Trainer(vocab=lm.padded_vocab, d_model=lm.d_model, mixers=["mamba"] * lm.n_layer, lr=3e-3,
                               warmup=0, steps=10)
    with pytest.raises(ssm.Error, match=r"argument 'path'.*from=MambaLM"):
        mixers.load(state)
    # Mamba-2 groups and state sizes traded (every tensor the same size): refused by the recorded config
    heads4 = ssm.load_model(data_dir / "mamba2" / "heads4")
    m2 = ssm.train.Trainer.from_model(heads4, steps=3)
    assert isinstance(m2.to_model(), ssm.Mamba2LM)
    m2.save(state)
    config = json.loads((data_dir / "mamba2" / "heads4" / "config.json").read_text())
    config.update(n_groups=2, state_size=config["state_size"] // 2)
    traded = ssm.train.Trainer.from_model(ssm.Mamba2LM.init(json.dumps(config)), steps=3)
    assert traded.parameter_names() == m2.parameter_names()
    with pytest.raises(ssm.Error, match=r"argument 'path'"):
        traded.load(state)
    with pytest.raises(ssm.Error, match=r"argument 'weight_decay'"):
        ssm.train.Trainer.from_model(lm, weight_decay=-1.0)
    with pytest.raises(ssm.Error, match=r"argument 'self'"):
        trainer().to_model()  # made from mixers: no checkpoint layout
    with pytest.raises(ssm.Error, match=r"argument 'lr'"):
        ssm.train.Trainer.from_model(lm, lr=float("nan"))
    with pytest.raises(ssm.Error, match=r"only Mamba and Mamba-2"):
        ssm.train.Trainer.from_pretrained(data_dir / "rwkv" / "tiny")


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    path = str(tmp_path / "state.safetensors")
    a = trainer(mixers=["mamba2", "gated_deltanet"])
    rng = np.random.default_rng(1)
    batches = [copy_batch(rng, 4, 9, 8) for _ in range(8)]
    losses_a = []
    for i, batch in enumerate(batches):
        losses_a.append(a.step(*batch)["loss"])
        if i == 3:
            a.save(path, {"note": "after 4 steps"})
    b = trainer(mixers=["mamba2", "gated_deltanet"], seed=99)  # other initial weights: load replaces them
    assert b.load(path) == {"note": "after 4 steps"}
    assert b.steps == 4
    losses_b = [b.step(*batch)["loss"] for batch in batches[4:]]
    assert losses_b == losses_a[4:]
    pa, pb = a.parameters(), b.parameters()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_bad_input_is_an_error_naming_the_argument(tmp_path):
    with pytest.raises(ssm.Error, match=r"add_mixer: argument 'name'.*'mamba3'"):
        trainer(mixers=["mamba3"])
    with pytest.raises(ssm.Error, match=r"argument 'mixers'"):
        trainer(mixers=[])
    with pytest.raises(ssm.Error, match=r"argument 'heads'"):
        trainer(mixers=["attention"], heads=3)
    with pytest.raises(ssm.Error, match=r"argument 'min_lr'"):
        trainer(min_lr=1.0)
    with pytest.raises(ssm.Error, match=r"argument 'clip_norm'"):
        trainer(clip_norm=float("nan"))
    t = trainer()
    ids, targets = copy_batch(np.random.default_rng(2), 2, 5, 8)
    with pytest.raises(ssm.Error, match=r"argument 'ids'"):
        t.step(ids.astype(np.float32), targets)
    with pytest.raises(ssm.Error, match=r"argument 'targets'"):
        t.step(ids, targets[:, :3])
    bad = ids.copy()
    bad[0, 0] = 8  # vocab 8
    with pytest.raises(ssm.Error, match=r"argument 'ids'"):
        t.step(bad, targets)
    assert t.steps == 0
    with pytest.raises(ssm.Error, match=r"argument 'name'"):
        t.parameter_capsule("nope")
    with pytest.raises(ssm.Error, match=r"argument 'max_len'"):
        trainer(mixers=["hyena"])  # Hyena's filters need the longest length
    with pytest.raises(ssm.Error, match=r"argument 'x'.*l_max"):
        trainer(mixers=["hyena"], max_len=8).step(*copy_batch(np.random.default_rng(3), 2, 12, 8))
    with pytest.raises(ssm.Error, match=r"argument 'lr'"):
        trainer(lr=float("inf"))
    with pytest.raises(ssm.Error, match=r"argument 'steps'"):
        trainer(steps=0)
    with pytest.raises(ssm.Error, match=r"argument 'metadata'.*reserved"):
        t.save(str(tmp_path / "x.safetensors"), {"trainer.config": "mine"})
    # States of another model, or of the same model with another schedule, are refused and change nothing.
    before = t.parameters()
    for name, other in [("mixers", trainer(mixers=["attention"])), ("lr", trainer(lr=3e-3))]:
        path = str(tmp_path / f"other_{name}.safetensors")
        other.save(path)
        with pytest.raises(ssm.Error, match=r"Trainer::load: argument 'path'.*" + name + "="):
            t.load(path)
    with pytest.raises(ssm.Error, match=r"missing\.safetensors"):
        t.load(str(tmp_path / "missing.safetensors"))
    assert all(np.array_equal(before[k], v) for k, v in t.parameters().items()) and t.steps == 0


def test_steps_from_two_threads_take_turns():
    """The calls release the GIL and hold the trainer's lock: two threads stepping one trainer make every step once."""
    import threading

    t = trainer(mixers=["gated_deltanet"])
    rng = np.random.default_rng(5)
    batches = [copy_batch(rng, 2, 8, 8) for _ in range(16)]
    seen = []

    def run(part):
        for ids, targets in part:
            seen.append(t.step(ids, targets)["step"])
            t.evaluate(ids, targets)

    threads = [threading.Thread(target=run, args=(batches[i::2],)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.steps == 16 and sorted(seen) == list(range(1, 17))
    assert all(np.isfinite(v).all() for v in t.parameters().values())
