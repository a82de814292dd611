"""Unlearning methods: one file per method (named as its registry name), each registering itself
once. Every module in this package is imported here, so adding a method touches no other file."""

from ..registry import import_submodules
from .base import GradientMethod, Method, Phase, Setup, build_component, build_method, describe_method, method_params, method_version, register_method

import_submodules(__name__)

__all__ = ["GradientMethod", "Method", "Phase", "Setup", "build_component", "build_method", "describe_method", "method_params", "method_version",
           "register_method"]
