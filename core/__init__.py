"""polyvm: describe a VM once, get it on any cloud or your own Linux box, then provision it over SSH."""

from .errors import PolyvmError
from .hookspecs import hookimpl
from .plugins import get_backend, list_backends
from .spec import VmSpec, load_spec_file, parse_spec

__all__ = ["PolyvmError", "VmSpec", "get_backend", "hookimpl", "list_backends", "load_spec_file", "parse_spec"]
__version__ = "0.1.0"
