"""Typed errors. Every message names the problem, what was given and what to do."""

from __future__ import annotations


class UnlearnError(Exception):
    """Base class of every error unlearnkit raises on purpose."""


class ConfigError(UnlearnError, ValueError):
    """A configuration (experiment file, method parameters, CLI arguments) is invalid."""


class UnknownName(ConfigError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class TaskError(UnlearnError, ValueError):
    """A task or split is malformed (overlapping splits, labels out of range, ...)."""


class EmptySelection(TaskError):
    """A selection (forget set, parameter mask) selected nothing."""


class MissingReference(UnlearnError, LookupError):
    """A method or metric needs a reference model (original, retrained, shadows) that was not provided."""


class ModelError(UnlearnError, ValueError):
    """A model is unusable: wrong output size, non-finite weights, unreadable weight file."""


class DivergenceError(UnlearnError, RuntimeError):
    """Training diverged (non-finite or exploding loss); weights were restored before raising."""


class StoreError(UnlearnError, RuntimeError):
    """The run store is unreadable or inconsistent."""


class DataUnavailable(UnlearnError, FileNotFoundError):
    """A dataset or model file is not on this machine; the message says how to get it."""


class RequestRefused(UnlearnError, ValueError):
    """A deletion request the model cannot honour as asked (e.g. it touches the data a frozen backbone was trained on)."""


class LedgerError(UnlearnError, RuntimeError):
    """A deletion ledger is unusable (not a ledger, damaged, locked) or a request cannot be recorded in it."""
