"""Mixture configs: the shipped stages load; every mistake is an error naming file and key."""

import os
import textwrap

import pytest
import yaml
from conftest import TOKENIZER, fuzz_examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    cfg = load_mixture(STAGE1, {"tokenizer": TOKENIZER})
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
    cfg = load_mixture(STAGE2, {"tokenizer": TOKENIZER})
    assert (cfg.total_tokens, cfg.seq_len) == (10**11, 4096)
    assert sum(s.weight for s in cfg.sources if s.category == "web") == pytest.approx(0.55)
    assert cfg.source("starcoder").category == "code"
    p = cfg.long_documents
    assert (p.threshold, p.factor, p.cap) == (4096, 2.0, 0.8)
    assert 4096 in cfg.bucket_bounds


def test_layout_defaults_to_samples(tmp_path):
    assert load_mixture(write(tmp_path, BASE)).layout == "samples"
    assert load_mixture(write(tmp_path, BASE + "layout: documents\n")).layout == "documents"


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
        (lambda b: b + "layout: document\n", ["unknown layout 'document'", "Did you mean 'documents'"]),
        (lambda b: b + "layout: rows\n", ["unknown layout 'rows'", "Valid layouts: samples, documents"]),
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


HF = """\
name: t
total_tokens: 1000
seq_len: 16
tokenizer: tok.json
sources:
  - name: fineweb
    kind: hf_dataset
    dataset: {path: HuggingFaceFW/fineweb-edu, name: sample-10BT, split: train}
    weight: 1
"""


def test_a_hugging_face_dataset_source(tmp_path):
    cfg = load_mixture(write(tmp_path, HF))
    ref = cfg.source("fineweb").spec.dataset
    assert (ref.path, ref.name, ref.split, ref.revision) == ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", None)
    assert cfg.source("fineweb").spec.text_key == "text"
    assert cfg.to_dict()["sources"][0]["dataset"]["name"] == "sample-10BT"
    saved = load_mixture(write(tmp_path, HF.replace(
        "{path: HuggingFaceFW/fineweb-edu, name: sample-10BT, split: train}", "{path: /data/saved}")))
    assert saved.source("fineweb").dataset.split == "train"


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda b: b.replace("name: sample-10BT", "nmae: sample-10BT"),
         ["unknown key 'sources[0].dataset.nmae'", "Did you mean 'name'"]),
        (lambda b: b.replace("split: train}", "split: [train]}"), ["'sources[0].dataset.split' must be a string"]),
        (lambda b: b.replace("dataset: {", "dataset: [").replace("train}", "train]"), ["must be a mapping"]),
        (lambda b: b.replace("{path: HuggingFaceFW/fineweb-edu, ", "{"),
         ["missing required key 'sources[0].dataset.path'"]),
        (lambda b: b.replace("    dataset:", "    root: x\n    dataset:"), ["drop 'root'"]),
        (lambda b: b.replace("kind: hf_dataset", "kind: files"), ["'dataset' is read by kind 'hf_dataset'"]),
        (lambda b: "\n".join(line for line in b.splitlines() if "dataset:" not in line),
         ["kind 'hf_dataset' needs 'dataset'"]),
    ],
)
def test_dataset_mistakes_name_file_and_key(tmp_path, edit, words):
    path = write(tmp_path, edit(HF))
    with pytest.raises(ConfigError) as e:
        load_mixture(path)
    for w in [path, *words]:
        assert w in str(e.value)


# --- fuzzing: whatever the file holds, the loader answers with a config or a ConfigError ---------

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _stage1_raw():
    with open(STAGE1) as f:
        return yaml.safe_load(f)


@st.composite
def mutated_configs(draw):
    raw = _stage1_raw()
    for _ in range(draw(st.integers(1, 4))):
        target = raw
        sources = raw.get("sources")
        if isinstance(sources, list) and sources and all(isinstance(x, dict) for x in sources) and draw(st.booleans()):
            target = sources[draw(st.integers(0, len(sources) - 1))]
        keys = sorted(target)
        action = draw(st.sampled_from(["delete", "set", "add"]))
        if action == "delete" and keys:
            target.pop(draw(st.sampled_from(keys)))
        elif action == "set" and keys:
            target[draw(st.sampled_from(keys))] = draw(_VALUES)
        else:
            target[draw(st.text(min_size=1, max_size=10))] = draw(_VALUES)
    return raw


@settings(max_examples=fuzz_examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated_configs())
def test_fuzz_mutated_configs_load_or_raise_config_error(tmp_path, raw):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    (tmp_path / "tok.json").write_text("{}")
    try:
        load_mixture(str(path), {"tokenizer": str(tmp_path / "tok.json")} if "tokenizer" in raw else None)
    except ConfigError as e:
        assert str(path) in str(e)


@settings(max_examples=fuzz_examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzz_arbitrary_bytes_load_or_raise_config_error(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError):
        load_mixture(str(path))


def test_dedup_is_off_without_its_section_and_the_config_hashes_as_before(tmp_path):
    from pipeline.config import config_hash

    cfg = load_mixture(write(tmp_path, BASE))
    assert cfg.dedup is None and not cfg.exact_dedup and cfg.normalization == "nfc_whitespace"
    assert "dedup" not in cfg.to_dict()
    on = load_mixture(write(tmp_path, BASE + "dedup: {priority: [b]}\n", "on.yaml"))
    assert on.exact_dedup and on.dedup.priority == ("b",) and on.dedup.normalization == "nfc_whitespace"
    assert on.to_dict()["dedup"] == {"exact": True, "normalization": "nfc_whitespace", "priority": ["b"]}
    assert config_hash(on) != config_hash(cfg)
    off = load_mixture(write(tmp_path, BASE + "dedup: {exact: false, normalization: raw}\n", "off.yaml"))
    assert not off.exact_dedup and off.normalization == "raw" and not off.near_dedup and off.near_params is None
    near = load_mixture(write(tmp_path, BASE + "dedup: {near: {threshold: 0.7}}\n", "near.yaml"))
    assert near.near_dedup and near.exact_dedup
    p = near.near_params
    assert (p.threshold, p.bands, p.rows, p.ngram, p.num_perm) == (0.7, 32, 4, 5, 128)  # params_for(0.7)
    assert near.to_dict()["dedup"]["near"] == {"threshold": 0.7, "ngram": 5, "num_perm": 128}


def test_both_stages_deduplicate_curated_sources_first():
    for path in (STAGE1, STAGE2):
        cfg = load_mixture(path, {"tokenizer": TOKENIZER})
        assert cfg.exact_dedup and cfg.dedup.normalization == "nfc_whitespace"
        assert cfg.dedup.priority[-2:] == ("c4", "refinedweb")


@pytest.mark.parametrize("body,words", [
    ("dedup: {normalization: nfkc}\n", ["dedup.normalization", "nfc_whitespace", "raw", "nfkc"]),
    ("dedup: {priority: [a, pilee]}\n", ["dedup.priority[1]", "pilee", "not a source"]),
    ("dedup: {priority: [a, b, a]}\n", ["dedup.priority[2]", "listed twice"]),
    ("dedup: {exact: yes please}\n", ["dedup.exact", "true or false"]),
    ("dedup: {exakt: true}\n", ["dedup.exakt", "Did you mean 'exact'"]),
    ("dedup: [a]\n", ["dedup", "mapping"]),
    ("dedup: {near: {threshold: 1.5}}\n", ["dedup.near.threshold", "(0, 1]"]),
    ("dedup: {near: {ngram: 0}}\n", ["dedup.near.ngram", "positive"]),
    ("dedup: {near: {treshold: 0.7}}\n", ["dedup.near.treshold", "Did you mean 'threshold'"]),
])
def test_dedup_mistakes_name_the_key(tmp_path, body, words):
    with pytest.raises(ConfigError) as e:
        load_mixture(write(tmp_path, BASE + body))
    for w in words:
        assert w in str(e.value), (w, str(e.value))
