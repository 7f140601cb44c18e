"""Joint-order conversion tables, one per dataset, all into the model's FreiHAND order.

FreiHAND order (the model's, ``handS3C.model.mano.FREIHAND_ORDER``): 0 wrist, 1-4 thumb
(CMC/MCP, MCP/PIP, IP, tip), 5-8 index (MCP, PIP, DIP, tip), 9-12 middle, 13-16 ring, 17-20 pinky.

HO3D order (its ``handJoints3D`` and the COCO-style ``joints_coord_cam``, and its submission
format): the 16 MANO skeleton joints (0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring,
13-15 thumb) followed by the five tips thumb, index, middle, ring, pinky.

DexYCB stores its 21 joints in the FreiHAND order already (wrist, thumb..., little).

Every table ``X_TO_FREIHAND`` is an index array: ``joints_freihand = joints_x[X_TO_FREIHAND]``;
``FREIHAND_TO_X`` is its inverse permutation: ``joints_x = joints_freihand[FREIHAND_TO_X]``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FREIHAND_JOINT_NAMES", "HO3D_JOINT_NAMES", "HO3D_TO_FREIHAND", "FREIHAND_TO_HO3D",
           "DEXYCB_TO_FREIHAND", "FREIHAND_TO_DEXYCB", "FREIHAND_TO_FREIHAND", "TO_FREIHAND", "to_freihand",
           "from_freihand", "inverse_permutation"]

FREIHAND_JOINT_NAMES = ("wrist",
                        "thumb1", "thumb2", "thumb3", "thumb4",
                        "index1", "index2", "index3", "index4",
                        "middle1", "middle2", "middle3", "middle4",
                        "ring1", "ring2", "ring3", "ring4",
                        "pinky1", "pinky2", "pinky3", "pinky4")

HO3D_JOINT_NAMES = ("wrist",
                    "index1", "index2", "index3",
                    "middle1", "middle2", "middle3",
                    "pinky1", "pinky2", "pinky3",
                    "ring1", "ring2", "ring3",
                    "thumb1", "thumb2", "thumb3",
                    "thumb4", "index4", "middle4", "ring4", "pinky4")


def _table(src_names, dst_names) -> np.ndarray:
    """Index array ``t`` with ``joints_dst = joints_src[t]`` (names must be a permutation)."""
    if sorted(src_names) != sorted(dst_names):
        raise ValueError("joint name lists are not permutations of each other")
    return np.array([src_names.index(n) for n in dst_names], dtype=np.int64)


def inverse_permutation(t) -> np.ndarray:
    t = np.asarray(t, dtype=np.int64)
    inv = np.empty_like(t)
    inv[t] = np.arange(t.size)
    return inv


HO3D_TO_FREIHAND = _table(HO3D_JOINT_NAMES, FREIHAND_JOINT_NAMES)
FREIHAND_TO_HO3D = inverse_permutation(HO3D_TO_FREIHAND)
DEXYCB_TO_FREIHAND = np.arange(21, dtype=np.int64)
FREIHAND_TO_DEXYCB = inverse_permutation(DEXYCB_TO_FREIHAND)
FREIHAND_TO_FREIHAND = np.arange(21, dtype=np.int64)

TO_FREIHAND = {"freihand": FREIHAND_TO_FREIHAND, "ho3d": HO3D_TO_FREIHAND, "dexycb": DEXYCB_TO_FREIHAND}
_FROM_FREIHAND = {"freihand": FREIHAND_TO_FREIHAND, "ho3d": FREIHAND_TO_HO3D, "dexycb": FREIHAND_TO_DEXYCB}


def to_freihand(joints, dataset: str):
    """(..., 21, D) joints in ``dataset``'s order -> FreiHAND order (numpy or torch)."""
    return joints[..., TO_FREIHAND[dataset], :]


def from_freihand(joints, dataset: str):
    """(..., 21, D) joints in FreiHAND order -> ``dataset``'s order (numpy or torch)."""
    return joints[..., _FROM_FREIHAND[dataset], :]
