"""Duplicate clusters: connected components, the keep rule, and answers that do not depend on input order."""

import random

import numpy as np
import pytest

from pipeline.dedup import clusters as cl
from pipeline.hashing import doc_hash


def reference_components(n, pairs):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def test_components_match_a_plain_union_find():
    rng = random.Random(1)
    for _ in range(300):
        n = rng.randint(1, 60)
        pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(rng.randint(0, 90))]
        assert cl.components(n, np.array(pairs).reshape(-1, 2)).tolist() == reference_components(n, pairs)
    chain = np.array([(i, i + 1) for i in range(999)])[::-1]  # a long path, joined from its far end
    assert (cl.components(1000, chain) == 0).all()
    with pytest.raises(ValueError):
        cl.components(3, np.array([[0, 3]]))


def refs_for(n, sources, seed=0):
    rng = random.Random(seed)
    return [cl.DocRef(rng.choice(sources), rng.randrange(3), i, doc_hash(f"doc-{seed}-{i}")) for i in range(n)]


def order_of(refs, priority):
    return cl.keep_order([r.source for r in refs], np.array([r.doc_hash for r in refs], np.uint64),
                         np.array([r.part for r in refs]), np.array([r.row for r in refs]), priority)


def test_keep_order_is_priority_then_doc_hash_then_position():
    refs = refs_for(200, ["c4", "pile", "web", "zzz"])
    priority = ["web", "c4"]  # pile and zzz unlisted: after both, ordered by doc hash between them
    order = order_of(refs, priority)
    assert [refs[i] for i in order] == sorted(refs, key=lambda r: cl.keep_key(r, priority))
    ranks = [cl.source_rank(refs[i].source, priority) for i in order]
    assert ranks == sorted(ranks) and ranks[-1] == 2
    assert cl.ref_of(cl.keep_key(refs[0], priority)) == refs[0]
    # Same doc hash in two sources (the same doc id): the source name decides.
    twins = [cl.DocRef("b", 0, 0, 5), cl.DocRef("a", 0, 0, 5)]
    assert order_of(twins, []).tolist() == [1, 0]


def random_case(seed, n=300):
    rng = random.Random(seed)
    refs = refs_for(n, ["c4", "pile", "web"], seed)
    texts = rng.choices(range(n // 3), k=n)  # content ids: many exact groups
    keys = np.array([[t, t * 7] for t in texts], dtype=np.uint64)
    near = [(rng.randrange(n), rng.randrange(n)) for _ in range(n // 4)]
    return refs, keys, near


def resolved(refs, keys, near, priority):
    kept, kind = cl.resolve(order_of(refs, priority), keys, np.array(near).reshape(-1, 2))
    return cl.removals(refs, kept, kind)


def test_the_resolution_does_not_depend_on_input_order():
    priority = ["web", "pile"]
    refs, keys, near = random_case(3)
    expected = resolved(refs, keys, near, priority)
    assert expected and {r.kind for r in expected} == {"exact", "near"}
    for seed in range(5):
        perm = list(range(len(refs)))
        random.Random(seed).shuffle(perm)
        where = {old: new for new, old in enumerate(perm)}
        shuffled_near = [(where[b], where[a]) for a, b in near]  # pairs reversed too
        random.Random(seed).shuffle(shuffled_near)
        got = resolved([refs[i] for i in perm], keys[perm], shuffled_near, priority)
        assert got == expected


def test_each_cluster_keeps_its_first_document_in_keep_order_and_names_the_kind():
    priority = ["web", "pile"]
    refs, keys, near = random_case(4)
    kept, kind = cl.resolve(order_of(refs, priority), keys, np.array(near))
    labels = reference_components(len(refs), near + [(i, j) for i in range(len(refs)) for j in range(i)
                                                      if (keys[i] == keys[j]).all()])
    for i in range(len(refs)):
        members = [j for j in range(len(refs)) if labels[j] == labels[i]]
        best = min(members, key=lambda j: cl.keep_key(refs[j], priority))
        assert kept[i] == best
        expected = cl.KEPT if i == best else cl.EXACT if (keys[i] == keys[best]).all() else cl.NEAR
        assert kind[i] == expected
    assert (kind[kept] == cl.KEPT).all()  # a kept document is never itself removed


def test_exact_only_near_only_and_nothing():
    refs = refs_for(4, ["a"])
    order = order_of(refs, [])
    keys = np.array([[1, 1], [2, 2], [1, 1], [3, 3]], dtype=np.uint64)
    kept, kind = cl.resolve(order, keys)
    assert sorted(cl.KINDS[k] for k in kind) == ["exact", "kept", "kept", "kept"]
    kept, kind = cl.resolve(order, None, np.array([[1, 3]]))
    assert sorted(cl.KINDS[k] for k in kind) == ["kept", "kept", "kept", "near"]
    kept, kind = cl.resolve(order)
    assert (kept == np.arange(4)).all() and (kind == cl.KEPT).all()


def test_candidate_pairs_are_stars_from_each_bucket_best_and_verification_filters():
    sigs = np.zeros((5, 4), np.uint32)
    sigs[:, 0] = [1, 1, 1, 2, 2]  # band 0: {0, 1, 2}, {3, 4}
    sigs[:, 2] = [9, 8, 9, 8, 7]  # band 1 (with sigs[:, 3] = 0): {0, 2}, {1, 3}, {4}
    bands = sigs.astype(">u4").view(np.dtype((np.void, 8))).reshape(5, 2)
    order = np.array([2, 0, 1, 3, 4])
    pairs = cl.candidate_pairs(bands, order)
    assert pairs.tolist() == [[1, 3], [2, 0], [2, 1], [3, 4]]
    assert cl.candidate_pairs(bands, order, valid=np.array([1, 1, 1, 0, 1], bool)).tolist() == [[2, 0], [2, 1]]
    assert cl.verify_pairs(pairs, sigs, 0.8).tolist() == [[2, 0]]  # 0 and 2 agree on all four values
    assert len(cl.verify_pairs(pairs, sigs, 0.75)) == 4  # the others on three of four
