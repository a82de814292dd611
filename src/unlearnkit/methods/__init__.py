"""Unlearning methods: one file per method, each registering itself once."""

from . import finetune, grad_ascent, grad_diff, random_label, retrain, salun, ssd  # noqa: F401  (registration)
from .base import GradientMethod, Method, build_component, build_method, method_params, register_method

__all__ = ["GradientMethod", "Method", "build_component", "build_method", "method_params", "register_method"]
