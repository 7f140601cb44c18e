"""nn.Modules built on the fused operators."""
from .s3c_block import SS2D, S3CBlock, dt_bias_init

__all__ = ["S3CBlock", "SS2D", "dt_bias_init"]
