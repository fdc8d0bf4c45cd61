"""Custom ops, each with an exact pure-PyTorch reference and (bias_act, upfirdn2d) a fused CUDA path."""
