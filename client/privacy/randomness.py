"""The randomness a site's DP guarantee rests on: Poisson sampling and Gaussian noise.

DP-SGD protects a record only if nobody else can replay the sampling and the noise: a party that
knows them subtracts the noise from the update and is left with the clipped gradients. So every
random draw of a round comes from one ChaCha20 key stream (a cryptographically secure generator),
keyed in one of two ways:

- :meth:`SiteRandomness.secure` (the default, and the only way in a deployment): a fresh 256-bit
  key from the operating system for every round, never stored, never sent;
- :meth:`SiteRandomness.replayable`: the key is the SHA-256 of a seed from the *site's own*
  config and the round's identity. Simulations use it, so that runs can be repeated and a resumed
  run ends where an uninterrupted one ends; anyone who knows the seed can replay the noise, and
  every report that shows such a site says so.

Nothing a server sends keys the stream. Gaussian noise is drawn the way Opacus's ``secure_mode``
draws it: each value is the sum of four normal draws, halved (same variance), which defeats the
floating-point attacks on a single draw (Holohan and Braghin 2021, arXiv 2107.10138, section
5.1). Normal draws come from 53-bit uniforms by the inverse normal CDF in float64 (a quarter of
the cost of Box-Muller here, and exact to float64 precision).
"""

from __future__ import annotations

import hashlib
import math
import secrets

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

CHUNK = 1 << 20  # values per draw from the stream (bounds the float64 temporaries)
NORMALS_PER_VALUE = 4


class SiteRandomness:
    """Uniform, permutation and Gaussian draws from one ChaCha20 key stream."""

    def __init__(self, key: bytes, replayable: bool) -> None:
        if len(key) != 32:
            raise ValueError("a ChaCha20 key is 32 bytes")
        self.replayable = replayable
        self._stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    @classmethod
    def secure(cls) -> SiteRandomness:
        """A stream keyed by the operating system's randomness (nobody can replay it)."""
        return cls(secrets.token_bytes(32), replayable=False)

    @classmethod
    def replayable(cls, seed: int, *identity: object) -> SiteRandomness:
        """A stream keyed by a site-local ``seed`` and the round's ``identity`` (simulations)."""
        material = "|".join(str(part) for part in (seed, *identity)).encode()
        return cls(hashlib.sha256(material).digest(), replayable=True)

    def uniform(self, count: int) -> torch.Tensor:
        """``count`` float64 values uniform in ``[0, 1)``, on the grid ``k / 2**53``."""
        return self._grid(count) * 2.0**-53

    def _grid(self, count: int) -> torch.Tensor:
        """``count`` integers uniform in ``[0, 2**53)``, as float64 (exact)."""
        words = np.frombuffer(self._stream.update(bytes(8 * count)), dtype=np.uint64)
        return torch.from_numpy((words >> np.uint64(11)).astype(np.float64))

    def permutation(self, count: int) -> torch.Tensor:
        """A uniformly random permutation of ``range(count)``."""
        return torch.argsort(self.uniform(count))

    def gaussian(self, shape: tuple[int, ...] | torch.Size, std: float) -> torch.Tensor:
        """Float32 noise of standard deviation ``std`` and the given shape (on the CPU)."""
        total = math.prod(shape)
        out = torch.empty(total, dtype=torch.float32)
        for start in range(0, total, CHUNK):
            count = min(CHUNK, total - start)
            out[start : start + count] = self._standard_normals(count).mul_(std).float()
        return out.reshape(shape)

    def _standard_normals(self, count: int) -> torch.Tensor:
        """``count`` standard normal values, each the halved sum of four draws."""
        midpoints = (self._grid(count * NORMALS_PER_VALUE) + 0.5) * 2.0**-53  # never 0 or 1
        normals = torch.special.ndtri(midpoints)
        return normals.reshape(NORMALS_PER_VALUE, count).sum(0).div_(2.0)
