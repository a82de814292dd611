"""Offline data sources and forget-set selection. Every module here is imported, so a new data
source is one file that registers itself in ``DATASETS``."""

from ..registry import import_submodules
from .forget import ForgetSpec, make_task, select_forget
from .sources import DataSource, load_dataset

import_submodules(__name__, skip=("forget",))

__all__ = ["DataSource", "ForgetSpec", "load_dataset", "make_task", "select_forget"]
