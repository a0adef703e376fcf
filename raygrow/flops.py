"""Training-FLOP accounting: the compute clock of every comparison and of ASHA.

Per token, one forward + backward pass costs (Kaplan et al. 2020, with the attention term):

    6 * N_nonemb                 matmuls of the transformer blocks (2 fwd + 4 bwd per weight)
  + 6 * d_model * vocab_size     the output head (counted even when tied: the matmul still runs)
  + 12 * n_layers * seq_len * d  attention scores and weighted values, QK^T and AV:
                                 2 * 2 * T * d forward per layer, x3 for training; no causal
                                 halving, as in PaLM's MFU convention

The token-embedding lookup and norms are not counted. A grown run's compute is the sum over
stages of flops_per_token(stage config) * tokens trained in that stage, plus any operator phase
(LiGO / incremental training steps), which the loop adds as it runs them. Torch-free: the
measured peak FLOP/s (MFU's roofline) lives in `raygrow.train.precision`.
"""

from __future__ import annotations

from raygrow.config import ModelConfig


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) for `config` at context `seq_len`."""
    n_nonemb = config.n_params(non_embedding=True) - config.d_model  # final norm: no matmul
    n_nonemb -= config.n_layers * 2 * config.d_model  # block norms: no matmul
    head = 6 * config.d_model * config.vocab_size
    attention = 12 * config.n_layers * seq_len * config.n_heads * config.head_dim
    return float(6 * n_nonemb + head + attention)


def forward_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Forward-only FLOPs per token (a third of training FLOPs): evaluation cost."""
    return flops_per_token(config, seq_len) / 3.0
