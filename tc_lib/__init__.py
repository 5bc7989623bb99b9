"""tc_lib — fine-tune pretrained text encoders (full, LoRA, adapters) and report on the runs."""

from .errors import ConfigError, DataError, TcError

__all__ = ["ConfigError", "DataError", "TcError"]
__version__ = "0.1.0"
