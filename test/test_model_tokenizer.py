"""OAT tokenizer (FSQ, encoder, decoder with MASK) against the original code's outputs."""
import pytest
import torch

from fixtures_oat import (assert_close, assert_equal, config_name, loaded_tokenizer,  # noqa: F401
                          policy, ref, t)
from oat_ros.model.fsq import FSQ


@pytest.fixture(scope="session")
def tok(config_name):
    return loaded_tokenizer(config_name)


def test_fsq_indices_round_trip():
    fsq = FSQ([8, 5, 5, 5])
    ids = torch.arange(1000)
    codes = fsq.indices_to_codes(ids)
    assert codes.min() == -1 and codes.max() == 1
    assert_equal(fsq.codes_to_indices(codes), ids)
    assert fsq.basis.tolist() == [1, 8, 40, 200]
    assert_equal(fsq.indices_to_codes(torch.tensor([1000])), fsq.indices_to_codes(torch.tensor([0])))


def test_fsq_rounds_half_to_even():
    fsq = FSQ([8, 5, 5, 5])
    fsq.bound = lambda z: z  # isolate the rounding step
    q = fsq.quantize(torch.tensor([[0.5, 1.5, -0.5, 2.5]]))
    assert q.tolist() == [[0.0, 1.0, 0.0, 1.0]]  # round(0.5)=0, round(1.5)=2, round(2.5)=2


def test_encoder_stages(tok, ref):
    a = t(ref["in/action_chunks"])
    assert_close(tok.action_normalizer.normalize(a), ref["tok/normalized_actions"])
    z, codes, ids = tok.encode(a)
    assert_close(z, ref["tok/encoder_latents_prequant"])
    assert_equal(codes, ref["tok/quantized_latents"])
    assert ids.dtype == torch.int64
    assert_equal(ids, ref["tok/token_ids"])


def test_policy_tokenizer_matches_tokenizer_checkpoint(policy, ref):
    # the policy builds its tokenizer from its own action_tokenizer.* tensors
    assert_equal(policy.action_tokenizer.tokenize(t(ref["in/action_chunks"])), ref["tok/token_ids"])


@pytest.mark.parametrize("K", range(1, 9))
def test_detokenize_every_prefix(tok, ref, K):
    ids = t(ref["tok/token_ids"])
    with torch.no_grad():
        assert_close(tok.detokenize(ids[:, :K]), ref["tok/detok_by_K"][K - 1])
        # right-padded ids with an explicit keep_k give the same
        assert_close(tok.detokenize(ids, K), ref["tok/detok_by_K"][K - 1])


def test_detokenize_mixed_k(tok, ref):
    ids, ks = t(ref["tok/token_ids"]), t(ref["tok/mixed_K"])
    padded = ids.clone()
    for b, k in enumerate(ks.tolist()):
        padded[b, k:] = 0
    with torch.no_grad():
        assert_close(tok.detokenize(padded, ks), ref["tok/detok_mixed"])
        assert_close(tok.detokenize(ids, ks), ref["tok/detok_mixed"])  # slots >= K ignored


def test_autoencode_codebook_and_bos(tok, ref):
    with torch.no_grad():
        assert_close(tok.detokenize(tok.tokenize(t(ref["in/action_chunks"]))), ref["tok/autoencode_full"])
        assert_close(tok.quantizer.indices_to_codes(torch.arange(1000)), ref["tok/codebook"])
        assert_close(tok.detokenize(torch.full((1, 8), 1000)), ref["tok/detok_bos_as_token"])


def test_ema_trap(config_name, ref):
    """The original loader uses ema_model; the raw `model` weights give other tokens."""
    raw = loaded_tokenizer(config_name, use_ema=False)
    ids = raw.tokenize(t(ref["in/action_chunks"]))
    assert_equal(ids, ref["tok/nonema_token_ids"])
    assert not torch.equal(ids, t(ref["tok/token_ids"]))
    with torch.no_grad():  # the raw decoder applied to the (EMA) reference ids
        assert_close(raw.detokenize(t(ref["tok/token_ids"])), ref["tok/nonema_detok_K8"])


def test_action_bounds(config_name):
    tok = loaded_tokenizer(config_name)
    f = tok.action_normalizer
    lo, hi = tok.action_bounds()
    assert_equal(lo, f.input_stats.min)
    assert_equal(hi, f.input_stats.max)
    # without stored stats: the range that scale/offset map onto [-1, 1]
    saved = f.input_stats.min.clone(), f.input_stats.max.clone()
    try:
        f.input_stats.min.zero_()
        f.input_stats.max.zero_()
        lo, hi = tok.action_bounds()
        assert_close(f.normalize(lo), -torch.ones(7), atol=1e-5, rtol=0)
        assert_close(f.normalize(hi), torch.ones(7), atol=1e-5, rtol=0)
    finally:
        f.input_stats.min.copy_(saved[0])
        f.input_stats.max.copy_(saved[1])
