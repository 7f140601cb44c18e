"""Reading HO3D's ``meta/<id>.pkl`` files without executing anything they contain.

The meta files are pickles of a plain dict of numpy arrays (plus a few strings / numbers).  A
pickle can name any importable callable and make the loader call it, so they are read with the
MANO loader's restricted unpickler (:class:`handS3C.model.mano._RestrictedManoUnpickler`: numpy's
array reconstruction, the latin-1 bytes helper, a few harmless builtins), narrowed further here:
the chumpy and scipy.sparse stand-ins a MANO file needs are refused too, so a meta file may hold
numpy arrays and plain containers only.  Anything else raises :class:`pickle.UnpicklingError`
naming the global, before it is called.
"""
from __future__ import annotations

import pickle
from typing import Any, Dict

import numpy as np

from ..model.mano import _RestrictedManoUnpickler

__all__ = ["load_meta_pickle", "RestrictedArrayUnpickler"]


class RestrictedArrayUnpickler(_RestrictedManoUnpickler):
    """numpy arrays, scalars and plain containers; every other global is refused."""

    def find_class(self, module: str, name: str):
        if module.startswith("chumpy") or module.startswith("scipy"):
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a dataset meta file may hold numpy arrays and plain "
                "containers only")
        try:
            return super().find_class(module, name)
        except pickle.UnpicklingError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a dataset meta file may hold numpy arrays and plain "
                "containers only") from None


def load_meta_pickle(path: str) -> Dict[str, Any]:
    """Read one HO3D meta pickle into a dict (values numpy arrays or plain Python values).

    Raises ``FileNotFoundError`` for a missing file and ``pickle.UnpicklingError`` (naming the
    file) for a refused global or a file that is not a pickle of a dict.
    """
    try:
        with open(path, "rb") as fh:
            obj = RestrictedArrayUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"HO3D meta file not found: {path!r}") from None
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{path}: {e}") from e
    except Exception as e:
        raise pickle.UnpicklingError(f"{path}: not a readable meta pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def meta_array(meta: Dict[str, Any], key: str, shape, path: str) -> np.ndarray:
    """``meta[key]`` as a float64 array reshaped to ``shape``; ValueError naming the file if absent/mis-sized."""
    if key not in meta or meta[key] is None:
        raise KeyError(key)
    a = np.asarray(meta[key], dtype=np.float64)
    if a.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {key!r} has {a.size} values, expected shape {tuple(shape)}")
    return a.reshape(shape)
