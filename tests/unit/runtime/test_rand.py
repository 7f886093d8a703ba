"""Random name suffixes: the generateName alphabet and length, and no repeats in practice."""

from __future__ import annotations

from controller.runtime.rand import ALPHABET, GENERATED_SUFFIX_LENGTH, random_string


def test_random_string_draws_from_the_alphabet() -> None:
    drawn = [random_string() for _ in range(2000)]
    assert all(len(s) == GENERATED_SUFFIX_LENGTH and set(s) <= set(ALPHABET) for s in drawn)
    assert set("".join(drawn)) == set(ALPHABET), "every character occurs"
    # 27^5 suffixes: 2,000 draws clash with probability ~1e-4.
    assert len(set(drawn)) >= len(drawn) - 1
    assert len(random_string(12)) == 12
