"""apimachinery's util/rand: the alphabet of generated names (no vowels, so no words; no
look-alikes such as 0/o, 1/l), random suffixes as generateName gets them, and SafeEncodeString."""

from __future__ import annotations

import random

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
#: The API server appends this many random characters to a generateName.
GENERATED_SUFFIX_LENGTH = 5

# Seeded from os.urandom, like apimachinery's math/rand source: names need to be unlikely to
# clash, not unpredictable (SystemRandom made a system call per character, per pod).
_RNG = random.Random()


def random_string(n: int = GENERATED_SUFFIX_LENGTH) -> str:
    """rand.String: n random characters of the alphabet."""
    return "".join(_RNG.choices(ALPHABET, k=n))


def safe_encode(s: str) -> str:
    """rand.SafeEncodeString."""
    return "".join(ALPHABET[ord(c) % len(ALPHABET)] for c in s)
