"""The Janus adapter's decode cache: the same images as decoding afresh, each distinct row
decoded once, copies handed out, and a byte budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import milr
from milr.models.janus_decode import DecodeCache


@pytest.fixture(scope="module")
def gen():
    return milr.load_generator("shapes", device="cpu")


def _pixels(images):
    return [np.asarray(im) for im in images]


def test_cached_images_equal_fresh_decodes_and_each_row_is_decoded_once(gen):
    torch.manual_seed(0)
    rows = torch.randint(0, 128, (3, gen.image_token_count))
    tokens = rows[[0, 1, 0, 2, 1, 0]]  # six rows, three distinct
    fresh = _pixels(gen._decode_fresh(tokens))
    gen.decode_cache = DecodeCache()
    seen = []

    def counting(t):
        seen.append(t.shape[0])
        return gen._decode_fresh(t)

    got = gen.decode_cache.decode(tokens, counting)
    assert seen == [3]  # one call, the distinct rows only
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(got), fresh, strict=True))
    again = gen.decode_cache.decode(tokens, counting)
    assert seen == [3]  # nothing decoded the second time
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(again), fresh, strict=True))
    assert (gen.decode_cache.misses, gen.decode_cache.hits) == (3, 9)
    # through the adapter's own decode, on new and known rows
    torch.manual_seed(1)
    more = torch.cat([torch.randint(0, 128, (2, gen.image_token_count)), rows[:1]])
    via = _pixels(gen.decode(more))
    assert all(np.array_equal(a, b) for a, b in zip(via, _pixels(gen._decode_fresh(more))))


def test_callers_get_copies(gen):
    gen.decode_cache = DecodeCache()
    tokens = torch.zeros(2, gen.image_token_count, dtype=torch.long)
    first, second = gen.decode(tokens)
    before = np.asarray(second).copy()
    first.paste((1, 2, 3), (0, 0, first.width, first.height))  # a caller drawing on its image
    third = gen.decode(tokens[:1])[0]
    assert np.array_equal(np.asarray(second), before)
    assert np.array_equal(np.asarray(third), before)


def test_byte_budget_evicts_the_least_recently_used_and_zero_turns_it_off(gen):
    size = 64 * 64 * 3  # one shapes image
    gen.decode_cache = DecodeCache(max_bytes=2 * size)
    rows = [torch.full((1, gen.image_token_count), v, dtype=torch.long) for v in range(3)]
    for r in rows:
        gen.decode(r)
    assert len(gen.decode_cache) == 2 and gen.decode_cache.bytes == 2 * size
    gen.decode(rows[0])  # evicted: decoded again
    assert gen.decode_cache.misses == 4
    gen.decode_cache = DecodeCache(max_bytes=0)
    gen.decode(rows[0])
    gen.decode(rows[0])
    assert len(gen.decode_cache) == 0 and gen.decode_cache.misses == 2
