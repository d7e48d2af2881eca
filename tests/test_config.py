"""Mixture configs: the shipped stages load; every mistake is an error naming file and key."""

import os
import textwrap

import pytest

from pipeline.config import load_mixture
from pipeline.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE1 = os.path.join(ROOT, "mixtures", "stage1.yaml")
STAGE2 = os.path.join(ROOT, "mixtures", "stage2.yaml")


def write(tmp_path, body: str, name="mix.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    (tmp_path / "tok.json").write_text("{}")
    return str(path)


BASE = """\
name: t
total_tokens: 1000
seq_len: 16
tokenizer: tok.json
sources:
  - {name: a, kind: c4, weight: 0.5, category: web}
  - {name: b, kind: pile, weight: 0.5}
"""


def test_stage1_is_the_recipe():
    cfg = load_mixture(STAGE1)
    assert (cfg.total_tokens, cfg.seq_len) == (10**12, 2048)
    web = sum(s.weight for s in cfg.sources if s.category == "web")
    assert web == pytest.approx(0.71)
    rp = cfg.source("redpajama")
    assert set(rp.exclude) == {"c4", "common_crawl"}
    assert "Pile-CC" in cfg.source("pile").exclude
    assert cfg.source("internal").weight == 0
    assert cfg.long_documents is None
    assert cfg.num_shards == 250


def test_stage2_is_the_recipe():
    cfg = load_mixture(STAGE2)
    assert (cfg.total_tokens, cfg.seq_len) == (10**11, 4096)
    assert sum(s.weight for s in cfg.sources if s.category == "web") == pytest.approx(0.55)
    assert cfg.source("starcoder").category == "code"
    p = cfg.long_documents
    assert (p.threshold, p.factor, p.cap) == (4096, 2.0, 0.8)
    assert 4096 in cfg.bucket_bounds


def test_overrides_win(tmp_path):
    cfg = load_mixture(write(tmp_path, BASE), {"total_tokens": 77, "seed": 5, "shards": None})
    assert (cfg.total_tokens, cfg.seed) == (77, 5)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda b: b.replace("seq_len:", "seq_lne:"), ["unknown key 'seq_lne'", "Did you mean 'seq_len'"]),
        (lambda b: b.replace("weight: 0.5, category", "wieght: 0.5, category"), ["sources[0].wieght", "'weight'"]),
        (lambda b: b.replace("weight: 0.5}", "weight: 0.4}"), ["sum to 1", "0.9", "b=0.4"]),
        (lambda b: b.replace("tok.json", "missing.json"), ["tokenizer 'missing.json' not found"]),
        (lambda b: b.replace("kind: c4", "kind: c5"), ["unknown kind 'c5'", "Did you mean 'c4'"]),
        (lambda b: b.replace("total_tokens: 1000", "total_tokens: lots"), ["'total_tokens' must be an integer"]),
        (lambda b: b.replace("name: t\n", ""), ["missing required key 'name'"]),
        (lambda b: b.replace("name: b", "name: a"), ["unique", "a"]),
    ],
)
def test_mistakes_name_file_and_key(tmp_path, edit, words):
    path = write(tmp_path, edit(BASE))
    with pytest.raises(ConfigError) as e:
        load_mixture(path)
    msg = str(e.value)
    assert path in msg
    for w in words:
        assert w in msg


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_mixture(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_mixture(write(tmp_path, "a: [1, 2"))
