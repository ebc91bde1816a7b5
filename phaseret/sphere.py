"""Geometry of the student's constraint ``|w_k| = sqrt(p)`` (SPEC 3, 5)."""

from __future__ import annotations

import math

import numpy as np


def project(W: np.ndarray) -> np.ndarray:
    """Rescale every row onto the sphere: ``w_k <- sqrt(p) w_k / |w_k|``; shape (d, p) kept."""
    radius = math.sqrt(W.shape[-1])  # a Python float keeps W's dtype (float32 stays float32)
    return W * (radius / np.linalg.norm(W, axis=-1, keepdims=True))


def tangent(G: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Tangent part of ``G`` at ``W``, row by row: ``g_k - (g_k . w_k / |w_k|^2) w_k``."""
    radial = np.sum(G * W, axis=-1, keepdims=True) / np.sum(W * W, axis=-1, keepdims=True)
    return G - radial * W
