"""Adapters: one per modality; how to get per-example losses and outputs from a model and a batch."""

from .classifier import ClassifierAdapter, get_adapter

__all__ = ["ClassifierAdapter", "get_adapter"]
