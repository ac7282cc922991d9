"""The OAT network in plain torch (no ROS): tokenizer, observation encoder, AR model with a
static KV cache, Blockwise tail, sampling, and the assembled OATPolicy."""
from .policy import OATPolicy, PolicyConfig
from .sampling import greedy, make_generator, select_tokens, select_tokens_device
from .tail import ParallelTailDecoder, TailConfig
from .tokenizer import OATTokenizer, TokenizerConfig
from .transformer import ARTransformer, KVCache

__all__ = ["OATPolicy", "PolicyConfig", "OATTokenizer", "TokenizerConfig", "ARTransformer",
           "KVCache", "ParallelTailDecoder", "TailConfig", "select_tokens",
           "select_tokens_device", "greedy", "make_generator"]
