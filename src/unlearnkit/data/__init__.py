"""Offline data sources and forget-set selection."""

from .forget import ForgetSpec, select_forget
from .sources import DataSource, load_dataset

__all__ = ["DataSource", "ForgetSpec", "load_dataset", "select_forget"]
