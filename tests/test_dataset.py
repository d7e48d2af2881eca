"""pipeline.dataset: global indexing over shards, seeded epochs, rank splits and resumption."""

import dataclasses
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SAMPLES, TOKENIZER

from pipeline.dataset import Collate, MixtureDataset, MixtureSampler, TorchCollate, TorchDataset, make_batch
from pipeline.errors import FormatError
from pipeline.mmidx import MMIDXWriter

SEQ_LEN = 8
COUNTS = [7, 5, 9]


def make_shards(folder, counts=COUNTS, seq_len=SEQ_LEN, stem="stage1", bad=None):
    """Write ``len(counts)`` shards of random samples; ``bad=(shard, entry)`` makes one entry short."""
    rng = np.random.default_rng(0)
    prefixes = []
    for k, count in enumerate(counts):
        prefix = os.path.join(folder, f"{stem}-{k:05d}-of-{len(counts):05d}")
        with MMIDXWriter(prefix, np.uint16) as w:
            for i in range(count):
                w.add(rng.integers(0, 50000, seq_len + 1 - (2 if (k, i) == bad else 0)))
        prefixes.append(prefix)
    return prefixes


def prefixes_in(folder):
    names = sorted(n[: -len(".idx")] for n in os.listdir(folder) if n.endswith(".idx"))
    return [os.path.join(folder, n) for n in names]


def plain_read(prefixes, seq_len=SEQ_LEN):
    """All samples, by reading the .bin files with numpy alone."""
    return np.concatenate(
        [np.fromfile(p + ".bin", dtype=np.uint16).reshape(-1, seq_len + 1) for p in prefixes]
    )


@pytest.fixture
def folder(tmp_path):
    make_shards(tmp_path)
    return str(tmp_path)


def test_global_indexing_matches_plain_read(folder):
    expected = plain_read(prefixes_in(folder))
    ds = MixtureDataset(folder)
    assert len(ds) == sum(COUNTS) == len(expected)
    assert ds.seq_len == SEQ_LEN and ds.num_tokens == expected.size and ds.dtype == np.uint16
    for i in range(len(ds)):
        assert np.array_equal(ds[i], expected[i])
    assert np.array_equal(ds[-1], expected[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_single_prefix_and_explicit_seq_len(folder):
    prefix = os.path.join(folder, "stage1-00001-of-00003")
    ds = MixtureDataset(prefix, seq_len=SEQ_LEN)
    assert len(ds) == COUNTS[1]
    assert np.array_equal(ds[0], plain_read([prefix])[0])
    assert len(MixtureDataset(prefix + ".idx")) == COUNTS[1]


def test_empty_shard_is_skipped(tmp_path):
    prefixes = make_shards(tmp_path, counts=[3, 0, 4])
    ds = MixtureDataset(tmp_path)
    expected = plain_read(prefixes)
    assert [ds[i].tolist() for i in range(len(ds))] == expected.tolist()


def test_sample_order(folder):
    ds = MixtureDataset(folder)
    order = ds.sample_order(epoch=0, seed=3)
    assert sorted(order.tolist()) == list(range(len(ds)))
    assert np.array_equal(order, ds.sample_order(epoch=0, seed=3))
    assert not np.array_equal(order, ds.sample_order(epoch=1, seed=3))
    assert not np.array_equal(order, ds.sample_order(epoch=0, seed=4))
    expected = np.random.Generator(np.random.PCG64([3, 0])).permutation(len(ds))
    assert np.array_equal(order, expected)  # the documented recipe, so a trainer can reproduce it


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_get_equal_shares_of_the_epoch(folder, drop_last):
    ds = MixtureDataset(folder)
    order, world, n = ds.sample_order(epoch=2, seed=7), 4, sum(COUNTS)
    seen = {}
    for rank in range(world):
        got = list(ds.iter_samples(seed=7, epoch=2, rank=rank, world_size=world, drop_last=drop_last))
        assert len(got) == (n // world if drop_last else -(-n // world))
        for p, sample in got:
            assert (p - rank) % world == 0 and p not in seen
            assert np.array_equal(sample, ds[order[p % n]])  # wrapped positions repeat the first
            seen[p] = rank
    assert sorted(seen) == list(range(world * len(got)))


@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("steps", [0, 1, 5, 7])
def test_resume_equals_tail_of_full_iteration(folder, world, steps):
    ds = MixtureDataset(folder)
    start = steps * world
    for rank in range(world):
        full = list(ds.iter_samples(seed=1, epoch=0, rank=rank, world_size=world))
        resumed = list(ds.iter_samples(seed=1, epoch=0, rank=rank, world_size=world, start=start))
        assert [p for p, _ in resumed] == [p for p, _ in full[steps:]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(resumed, full[steps:]))


def test_iter_samples_rejects_bad_arguments(folder):
    ds = MixtureDataset(folder)
    with pytest.raises(ValueError):
        next(ds.iter_samples(rank=2, world_size=2))
    with pytest.raises(ValueError):
        next(ds.iter_samples(start=len(ds) + 1))


def test_non_uniform_entry_names_the_shard(tmp_path):
    make_shards(tmp_path, bad=(2, 3))
    with pytest.raises(FormatError) as e:
        MixtureDataset(tmp_path)
    msg = str(e.value)
    assert "stage1-00002-of-00003.idx" in msg and "entry 3" in msg and f"{SEQ_LEN + 1} tokens" in msg


def test_explicit_seq_len_mismatch(folder):
    with pytest.raises(FormatError, match="stage1-00000-of-00003.idx.*entry 0"):
        MixtureDataset(folder, seq_len=SEQ_LEN + 1)


def test_manifest_order_is_honoured(folder):
    prefixes = prefixes_in(folder)
    names = [os.path.basename(p) for p in reversed(prefixes)]
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"shards": [{"prefix": n} for n in names]}, f)
    ds = MixtureDataset(folder)
    expected = plain_read(prefixes[::-1])
    assert [ds[i].tolist() for i in range(len(ds))] == expected.tolist()


def test_manifest_count_must_match(folder):
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"shards": [{"prefix": "stage1-00000-of-00003"}]}, f)
    with pytest.raises(FormatError, match="manifest.json: lists 1 shards, but .* holds 3"):
        MixtureDataset(folder)


def test_missing_shard_is_reported(folder):
    for ext in (".bin", ".idx"):
        os.remove(os.path.join(folder, "stage1-00001-of-00003" + ext))
    with pytest.raises(FormatError, match="missing 00001"):
        MixtureDataset(folder)


def test_empty_folder(tmp_path):
    with pytest.raises(FormatError, match="found none"):
        MixtureDataset(tmp_path)


def test_pickles_by_reopening(folder):
    ds = MixtureDataset(folder)
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy) == len(ds) and np.array_equal(copy[5], ds[5])


# --- MixtureSampler: equal splits, exact resumption, world-size changes, epoch rollover ---


def global_stream(samplers):
    """One pass of every rank's sampler, interleaved back into global order (rank r at r, r+W, ...)."""
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1, "ranks got different counts"
    return [i for picks in zip(*per_rank) for i in picks]


def ranks(n, world, batch_size=1, drop_last=True, seed=3):
    return [MixtureSampler(n, seed, r, world, batch_size=batch_size, drop_last=drop_last) for r in range(world)]


@pytest.mark.parametrize("drop_last, per_rank", [(True, 121), (False, 122)])
def test_487_samples_over_4_ranks_split_equally(drop_last, per_rank):
    samplers = ranks(487, 4, drop_last=drop_last)
    assert [len(s) for s in samplers] == [per_rank] * 4
    stream = global_stream(samplers)
    order = np.random.Generator(np.random.PCG64([3, 0])).permutation(487)
    assert stream == [int(order[p % 487]) for p in range(4 * per_rank)]


def test_a_pass_is_an_epoch_and_rolls_over():
    (s,) = ranks(10, 1, batch_size=4)
    first, second = list(s), list(s)
    assert len(first) == len(second) == 8
    assert first == np.random.Generator(np.random.PCG64([3, 0])).permutation(10)[:8].tolist()
    assert second == np.random.Generator(np.random.PCG64([3, 1])).permutation(10)[:8].tolist()
    assert s.state_dict()["epoch"] == 2 and s.state_dict()["consumed"] == 0
    s.set_epoch(2)  # the current epoch: a no-op, as a resumed loop calls it
    assert s.state_dict()["epoch"] == 2
    s.set_epoch(0)
    assert list(s) == first


def test_len_is_the_pass_being_iterated():
    (s,) = ranks(10, 1, batch_size=2)
    it = iter(s)
    taken = [next(it) for _ in range(4)]
    assert len(s) == 10 and s.state_dict()["consumed"] == 4  # a DataLoader's len() holds for the pass
    del it  # a loop that breaks out: the rest of the epoch is what a new pass yields
    assert len(s) == 6 and len(taken + list(s)) == 10


@pytest.mark.parametrize("world, batch_size, drop_last", [(1, 1, True), (3, 2, True), (2, 4, False)])
@pytest.mark.parametrize("steps_done", [0, 1, 2, 3])
def test_sampler_resumes_mid_epoch_exactly(world, batch_size, drop_last, steps_done):
    n = 21
    reference = ranks(n, world, batch_size, drop_last)
    expected = [list(s) + list(s) + list(s) for s in reference]  # three epochs
    live = ranks(n, world, batch_size, drop_last)
    iters = [iter(s) for s in live]
    done = [[next(it) for _ in range(steps_done * batch_size)] for it in iters]
    states = [s.state_dict() for s in live]
    assert all(st == states[0] for st in states)  # between steps every rank holds the same position
    resumed = ranks(n, world, batch_size, drop_last)
    for s in resumed:
        s.load_state_dict(states[0])
    for r, s in enumerate(resumed):
        got = done[r] + list(s) + list(s)  # the rest of this epoch (or none left), then the next
        assert got == expected[r][: len(got)] and len(got) >= 2 * len(expected[r]) // 3


@pytest.mark.parametrize("before, after", [(2, 1), (1, 3), (4, 2)])
def test_world_size_change_continues_the_global_order(before, after):
    n, steps = 50, 3
    order = np.random.Generator(np.random.PCG64([3, 0])).permutation(n).tolist()
    old = ranks(n, before, batch_size=2)
    taken = [[next(it) for _ in range(steps * 2)] for it in map(iter, old)]
    state = old[0].state_dict()
    assert state["consumed"] == steps * 2 * before
    new = ranks(n, after, batch_size=2)
    for s in new:
        s.load_state_dict(state)
    stream = [i for picks in zip(*taken) for i in picks] + global_stream(new)
    left = n - state["consumed"]
    assert stream == order[: state["consumed"] + left - left % (2 * after)]
    assert new[0].state_dict()["epoch"] == 1


def test_load_state_dict_refuses_another_order():
    state = MixtureSampler(21, seed=3).state_dict()
    with pytest.raises(ValueError, match="seed=3"):
        MixtureSampler(21, seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples=21"):
        MixtureSampler(22, seed=3).load_state_dict(state)


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        MixtureSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="one step"):
        MixtureSampler(10, world_size=4, batch_size=3)
    assert len(MixtureSampler(10, world_size=4, batch_size=3, drop_last=False)) == 3


# --- Batches: Megatron's get_ltor_masks_and_position_ids, in numpy ---


def megatron_reference(tokens, eos, reset_position_ids, reset_attention_mask, eod_mask_loss):
    """Megatron-LM's loops, transcribed: mask True = blocked; positions after an EOS restart."""
    b, s = tokens.shape
    mask = np.tril(np.ones((b, 1, s, s))) if reset_attention_mask else np.tril(np.ones((1, 1, s, s)))
    loss_mask = np.ones((b, s), np.float32)
    if eod_mask_loss:
        loss_mask[tokens == eos] = 0.0
    position_ids = np.tile(np.arange(s), (b, 1))
    for row in range(b):
        prev = 0
        for i in np.flatnonzero(tokens[row] == eos):
            if reset_attention_mask:
                mask[row, 0, i + 1:, : i + 1] = 0
            if reset_position_ids:
                position_ids[row, i + 1:] -= i + 1 - prev
                prev = i + 1
    return mask < 0.5, loss_mask, position_ids


@pytest.mark.parametrize("options", [(False, False, False), (True, True, True), (True, False, True),
                                     (False, True, False)])
def test_batch_matches_megatron(options):
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 6, (5, 17))  # eos 0: several documents per row, EOS first and last
    samples[0, 0] = samples[1, -2] = samples[2, 3] = samples[2, 4] = 0
    reset_position_ids, reset_attention_mask, eod_mask_loss = options
    batch = make_batch(list(samples), eos_id=0, reset_position_ids=reset_position_ids,
                       reset_attention_mask=reset_attention_mask, eod_mask_loss=eod_mask_loss)
    mask, loss_mask, position_ids = megatron_reference(samples[:, :-1], 0, *options)
    assert batch["tokens"].dtype == batch["labels"].dtype == np.int64
    assert np.array_equal(batch["tokens"], samples[:, :-1]) and np.array_equal(batch["labels"], samples[:, 1:])
    assert batch["loss_mask"].dtype == np.float32 and np.array_equal(batch["loss_mask"], loss_mask)
    assert np.array_equal(batch["position_ids"], position_ids)
    if reset_attention_mask:
        assert batch["attention_mask"].shape == (5, 1, 16, 16) and np.array_equal(batch["attention_mask"], mask)
    else:
        assert "attention_mask" not in batch


def test_batch_options_need_the_eos_id(folder):
    ds = MixtureDataset(folder)
    assert ds.eos_id is None  # no manifest
    with pytest.raises(ValueError, match="eos_id"):
        Collate(ds.eos_id, reset_position_ids=True)([ds[0]])
    assert Collate()([ds[0], ds[1]])["tokens"].shape == (2, SEQ_LEN)


def test_eos_id_comes_from_the_manifest(folder):
    names = [os.path.basename(p) for p in prefixes_in(folder)]
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"shards": [{"prefix": n} for n in names], "tokenizer": {"eos_id": 0}}, f)
    assert MixtureDataset(folder).eos_id == 0
    assert MixtureDataset(os.path.join(folder, names[1])).eos_id == 0  # one shard: its folder's manifest


NUMPY_ONLY = """
import sys
sys.modules["apache_beam"] = sys.modules["pyarrow"] = None  # makes `import apache_beam` fail
from pipeline.dataset import MixtureDataset, MixtureSampler, make_batch
ds = MixtureDataset(sys.argv[1])
(indices,) = [list(MixtureSampler(len(ds), seed=1, batch_size=4))]
batch = make_batch([ds[i] for i in indices[:4]], eos_id=0, reset_position_ids=True)
assert not [m for m in sys.modules if m.split(".")[0] in ("apache_beam", "pyarrow") and sys.modules[m]]
print(len(ds), batch["tokens"].shape)
"""


def test_reader_imports_without_beam_or_pyarrow(folder):
    out = subprocess.run([sys.executable, "-c", NUMPY_ONLY, folder], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(sum(COUNTS)), "(4,", f"{SEQ_LEN})"]


# --- PyTorch adapters: skipped, with the reason printed, where torch is missing ---


@pytest.fixture(scope="module")
def torch():
    """torch, or a skip whose reason `pytest -ra` prints (before any mixture is built)."""
    return pytest.importorskip("torch", reason="the PyTorch checks need torch: pip install -e '.[trainers]'")


WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # as in a numpy-only environment
from pipeline.dataset import TorchCollate, TorchDataset
for make in (lambda: TorchDataset(sys.argv[1]), lambda: TorchCollate(0)):
    try:
        make()
    except ImportError as e:
        print(e)
"""


def test_torch_adapters_without_torch_say_what_to_install(folder):
    out = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, folder], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all("pip install torch" in line for line in lines)
    assert lines[0].startswith("TorchDataset needs PyTorch") and lines[1].startswith("TorchCollate needs")


def test_torch_adapter(torch, folder):
    ds = TorchDataset(folder)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == sum(COUNTS)
    assert ds[0].dtype == torch.int64 and ds[0].tolist() == MixtureDataset(folder)[0].tolist()
    assert pickle.loads(pickle.dumps(ds))[1].tolist() == ds[1].tolist()


def test_torch_collate(torch, folder):
    ds = MixtureDataset(folder)
    collate = TorchCollate(eos_id=int(ds[0][2]), reset_attention_mask=True, eod_mask_loss=True)
    batch = pickle.loads(pickle.dumps(collate))([ds[0], ds[1]])  # DataLoader workers pickle it
    expected = make_batch([ds[0], ds[1]], **dataclasses.asdict(collate))
    assert batch.keys() == expected.keys()
    for key, value in batch.items():
        assert isinstance(value, torch.Tensor) and np.array_equal(value.numpy(), expected[key]), key
    assert batch["tokens"].dtype == torch.int64 and batch["loss_mask"].dtype == torch.float32
    assert batch["attention_mask"].dtype == torch.bool and batch["loss_mask"][0, 2] == 0.0


# --- A PyTorch data-parallel loop on a dry run's shards: checkpoint, resume, identical losses ---

BATCH = 8  # per rank: 2 ranks x 8 = 16 samples a step, ~24 steps an epoch of the mixture below
STEPS, SAVE_AT = 30, 15


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """A real mixture (stage 1 recipe, 50k tokens, seq_len 128) built by the Beam pipeline."""
    from pipeline.config import load_mixture
    from pipeline.mixture import run_mixture  # Beam: imported here, not by the training processes

    root = tmp_path_factory.mktemp("dry")
    cfg = load_mixture(os.path.join(ROOT, "mixtures", "stage1.yaml"),
                       {"shards": 2, "total_tokens": 50_000, "seq_len": 128, "tokenizer": TOKENIZER})
    run_mixture(cfg, SAMPLES, str(root / "stage1"), str(root / "cache"),
                ["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    return str(root / "stage1")


def train_rank(folder, out, steps, save_at=0, resume=""):
    """One rank of a DDP run (gloo, CPU): a tiny LM, SGD with momentum, losses written per step."""
    import torch
    import torch.distributed as dist

    from pipeline.dataset import TorchCollate

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ds = MixtureDataset(folder)
    sampler = MixtureSampler(len(ds), seed=5, rank=rank, world_size=world, batch_size=BATCH)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=BATCH, sampler=sampler,
        collate_fn=TorchCollate(ds.eos_id, reset_position_ids=True, eod_mask_loss=True))
    vocab = read_json(os.path.join(folder, "manifest.json"))["tokenizer"]["vocab_size"]
    model = tiny_lm(torch, vocab, ds.seq_len)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    step, losses = 0, {}
    if resume:
        ckpt = torch.load(resume)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sampler.load_state_dict(ckpt["data"])
        step = ckpt["step"]
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    while step < steps:
        for batch in loader:
            logits = ddp(batch["tokens"], batch["position_ids"])
            per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                                          reduction="none")
            loss = (per_token * batch["loss_mask"].flatten()).sum() / batch["loss_mask"].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            losses[step] = [loss.item(), sampler.state_dict()["epoch"]]
            if step == save_at and rank == 0:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "data": sampler.state_dict(), "step": step}, os.path.join(out, "ckpt.pt"))
            if step == steps:
                break
    with open(os.path.join(out, f"losses-{rank}.json"), "w") as f:
        json.dump(losses, f)
    dist.barrier()
    dist.destroy_process_group()


def tiny_lm(torch, vocab, seq_len):
    """Token and position embeddings into a linear head: enough for DDP, gradients and momentum."""

    class TinyLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = torch.nn.Embedding(vocab, 16), torch.nn.Embedding(seq_len, 16)
            self.out = torch.nn.Linear(16, vocab)

        def forward(self, tokens, position_ids):
            return self.out(self.tok(tokens) + self.pos(position_ids))

    return TinyLM()


def launch(world, folder, out, **kwargs):
    """Run ``train_rank`` in ``world`` fresh processes (torchrun's environment); return each rank's losses."""
    import socket

    os.makedirs(out, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"import test_dataset; test_dataset.train_rank({folder!r}, {out!r}, **{kwargs!r})"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
           "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "tests"), ROOT])}
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**env, "RANK": str(r)}, cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for r in range(world)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)
    return [read_json(os.path.join(out, f"losses-{r}.json")) for r in range(world)]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def test_ddp_training_resumes_with_identical_losses(torch, dry_run, tmp_path):
    full = launch(2, dry_run, str(tmp_path / "a"), steps=STEPS)
    first = launch(2, dry_run, str(tmp_path / "b"), steps=SAVE_AT, save_at=SAVE_AT)
    rest = launch(2, dry_run, str(tmp_path / "c"), steps=STEPS, resume=str(tmp_path / "b" / "ckpt.pt"))
    for rank in range(2):
        assert list(full[rank]) == [str(k) for k in range(1, STEPS + 1)]
        assert {**first[rank], **rest[rank]} == full[rank]  # bit-identical float losses, same epochs
        assert full[rank][str(SAVE_AT)][1] == 0 and full[rank][str(STEPS)][1] == 1  # crossed an epoch
    assert full[0] != full[1]  # each rank trained on its own samples
