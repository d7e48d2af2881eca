"""pipeline.tokenizer.cuts and structure: where texts may be cut without changing the ids."""


import pytest
from tokenizer_helpers import (
    encoder,
    shipped,
)
from tokenizers import normalizers

from pipeline.tokenizer import (
    is_safe_cut,
    safe_cut_points,
    split_at_safe_cuts,
)


@pytest.mark.parametrize(
    "text, i, safe",
    [
        ("a b", 1, True),
        ("a. The", 2, True),
        ("<|endoftext|> And", 13, True),  # right after an added token
        ("e\u0301 x", 2, True),  # after a combining mark: the mark stays with its base
        ("a  b", 1, True),  # before a run of spaces (GPT-NeoX: an added token), which stays whole
        ("a 1", 1, True),
        ("a \u0301", 1, True),
        ("x 's", 1, True),
        ("a ", 1, True),
        ("a  b", 2, False),  # inside a run of spaces
        ("a\tb", 1, False),  # only before ASCII spaces
        ("a\u00a0b", 1, False),
        ("\u00a0 b", 1, False),  # after whitespace (NBSP is whitespace to the regex)
        ("\n b", 1, False),
        ("\u200b b", 1, False),  # after characters older Unicode versions called spaces
        ("ab", 1, False),
        (" b", 0, False),
        ("a b", 3, False),
    ],
)
def test_is_safe_cut(text, i, safe):
    assert is_safe_cut(text, i) is safe


def test_cut_points_are_safe_and_pieces_join():
    text = "The quick brown fox, don't you know? It's 42 km\u00a0away.\n\n" * 40
    cuts = safe_cut_points(text, chunk_chars=64)
    assert len(cuts) > 20
    assert all(is_safe_cut(text, i) for i in cuts)
    pieces = split_at_safe_cuts(text, chunk_chars=64)
    assert "".join(pieces) == text
    assert all(len(p) >= 64 for p in pieces[:-1])


def test_no_safe_cut_means_one_piece():
    cjk = "東京は日本の首都です。" * 1000
    assert safe_cut_points(cjk, chunk_chars=64) == []
    assert encoder("shipped", 64).pieces(cjk) == [cjk]
    # The first safe cut lies far past the target: the piece grows to reach it.
    text = cjk + " and then English words follow"
    assert split_at_safe_cuts(text, chunk_chars=64) == [cjk, " and then English words follow"]


def test_cut_scan_agrees_with_is_safe_cut_for_every_code_point():
    """The regex used for scanning and `is_safe_cut` judge every preceding character alike."""
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        text = chr(cp) + " "
        assert safe_cut_points(text, chunk_chars=1) == ([1] if is_safe_cut(text, 1) else []), hex(cp)


@pytest.mark.slow
def test_facts_the_cut_rule_rests_on_hold_for_every_code_point():
    """For every character X that `is_safe_cut` accepts before the space, with this tokenizers build:

    the pre-tokenizer never puts X and the space in one pre-token (X is not `\\s` to its regex), and
    its NFC never yields whitespace; and for every character, NFC(X + " ") == NFC(X) + " ".
    """
    pre = shipped().tokenizer.pre_tokenizer
    nfc = normalizers.NFC().normalize_str
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        x = chr(cp)
        assert nfc(x + " ") == nfc(x) + " ", hex(cp)
        if is_safe_cut(x + " ", 1):
            assert len(pre.pre_tokenize_str(x + " ")) == 2, hex(cp)
            assert not any(c.isspace() for c in nfc(x)), hex(cp)
