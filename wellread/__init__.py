"""wellread: the compact-BERT recipe of *Well-Read Students Learn Better* (Turc et al., 2019)."""

from wellread.errors import WellreadError

__version__ = "0.1.0"
__all__ = ["WellreadError", "__version__"]
