"""AR token model: memory, static KV-cache step decoding, teacher forcing."""
import torch

from fixtures_oat import assert_close, assert_equal, config_name, policy, ref, t  # noqa: F401
from oat_ros.model.sampling import greedy


def _features(ref):
    return t(ref["obs/features_centercrop"])


def test_memory(policy, ref):
    with torch.no_grad():
        assert_close(policy.model.encode_memory(_features(ref)), ref["ar/memory"])


def test_greedy_tokens_and_step_logits(policy, ref):
    tokens, logits = policy.generate(_features(ref), K=8, temperature=0.0)
    assert tokens.dtype == torch.int64
    assert_equal(tokens, ref["ar/greedy_tokens"])
    assert_close(logits, ref["ar/greedy_step_logits"])


def test_teacher_forced_forward(policy, ref):
    tokens = t(ref["ar/greedy_tokens"])
    ids = torch.cat([torch.full((tokens.shape[0], 1), policy.bos_id), tokens[:, :-1]], 1)
    with torch.no_grad():
        memory = policy.model.encode_memory(_features(ref))
        assert_close(policy.model(ids, memory), ref["ar/forward_logits_teacher"])


def test_kv_cache_step_equals_full_forward(policy, ref):
    """Step decoding through the static cache = the naive full pass, at every position."""
    m = policy.model
    tokens = t(ref["ar/greedy_tokens"])
    B = tokens.shape[0]
    ids = torch.cat([torch.full((B, 1), policy.bos_id), tokens], 1)  # 9 positions
    with torch.no_grad():
        memory = m.encode_memory(_features(ref))
        full_logits, full_hidden = m(ids, memory, return_hidden=True)
        cache = m.new_cache(max_batch=B + 2)  # larger than needed: rows [:B] are used
        cross = m.cross_kv(memory)
        for pos in range(ids.shape[1]):
            pos_arg = torch.tensor(pos) if pos % 2 else pos  # int or 0-dim tensor
            logits, hidden = m.step(ids[:, pos], pos_arg, cache, cross)
            assert_close(logits, full_logits[:, pos], atol=1e-5, rtol=1e-5)
            assert_close(hidden, full_hidden[:, pos], atol=1e-5, rtol=1e-5)


def test_cache_reuse_without_reset(policy, ref):
    m = policy.model
    feats = _features(ref)
    cache = m.new_cache(max_batch=feats.shape[0])
    with torch.no_grad():
        memory = m.encode_memory(feats)
        cross = m.cross_kv(memory)
        runs = []
        for _ in range(2):  # second sequence overwrites the slots of the first
            ids = torch.full((feats.shape[0],), policy.bos_id)
            out = []
            for pos in range(8):
                logits, _ = m.step(ids, pos, cache, cross)
                ids = greedy(logits)
                out.append(ids)
            runs.append(torch.stack(out, 1))
    assert_equal(runs[0], ref["ar/greedy_tokens"])
    assert_equal(runs[1], runs[0])


def test_greedy_is_prefix_consistent(policy, ref):
    full, _ = policy.generate(_features(ref), K=8)
    for K in (1, 4, 7):
        part, logits = policy.generate(_features(ref), K=K)
        assert logits.shape == (full.shape[0], K, policy.cfg.vocab_size)
        assert_equal(part, full[:, :K])


def test_tied_head(policy):
    assert policy.model.head.weight is policy.model.tok_emb.weight
