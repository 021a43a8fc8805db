"""The compiled kernels (masquerade._native); everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    flags = ["/O2", "/fp:precise", "/std:c11"]
else:
    # -ffp-contract=off: no fused multiply-add, so results are the same on every instruction set
    flags = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-math-errno"]

setup(ext_modules=[Extension("masquerade._native", ["src/masquerade/_native.c"], extra_compile_args=flags)])
