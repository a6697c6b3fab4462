"""Lets mxnet 1.9.1 import with the numpy of current Pythons; every oracle script imports this before mxnet.

mxnet 1.9.1 (the last release) reads numpy names at import that later numpy removed:
``np.bool`` (gone in 1.24, back in 2.0), the constants and function aliases gone in 2.0,
``np.in1d``/``np.trapz`` gone in 2.4, and the financial functions gone in 1.20 (for which
1.20-1.23 still handed out a stub). numpy 1.23.5, the last that has them all, has no
wheels past CPython 3.11. Each missing name is restored as numpy 1.23 defined it; none is
used by the oracle scripts, which need only ``mx.recordio``. On Python 3.12+ mxnet also
imports ``distutils``, which the oracle venv gets from setuptools (requirements-mxnet.txt).
"""

import math
import warnings

import numpy as np


def _removed_financial_function(name):
    def removed(*args, **kwargs):
        raise RuntimeError(f"numpy.{name} was removed in NumPy 1.20; see numpy_financial")

    removed.__name__ = name
    return removed


_ALIASES = {
    "bool": bool,
    "PZERO": 0.0,
    "NZERO": -0.0,
    "PINF": math.inf,
    "NINF": -math.inf,
    "Inf": math.inf,
    "NAN": math.nan,
    "NaN": math.nan,
    "alltrue": np.all,
    "sometrue": np.any,
    "product": np.prod,
    "round_": np.round,
    "msort": lambda a: np.sort(a, axis=0),
    "in1d": lambda *args, **kwargs: np.isin(*args, **kwargs).ravel(),
    "trapz": lambda *args, **kwargs: np.trapezoid(*args, **kwargs),
    **{name: _removed_financial_function(name) for name in ("mirr", "npv", "pmt", "ppmt", "pv", "rate")},
}

with warnings.catch_warnings():
    # numpy 1.20-1.23 still has most of them, behind a DeprecationWarning.
    warnings.simplefilter("ignore")
    for _name, _value in _ALIASES.items():
        try:
            getattr(np, _name)
        except AttributeError:
            setattr(np, _name, _value)
