"""Dynamic Space Shrinking: Algorithm 1, a DSS step on a trained toy supernet (shrinks the
space, lowers its mean validation loss, deterministic), DSS inside fairseq-train
(stop-and-resume equals an uninterrupted run, two CPU ranks agree) and its report."""
from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys

import pytest
import torch

from fairseq_nas.sampling import (
    DSSOptions,
    DSSSampler,
    SampleSpace,
    dss_step,
    evolutionary_exploration,
    space_digest,
)
from fairseq_nas.sampling.dss import DSS_BEST, DSS_DIVERGENCE, DSS_LOG, DSS_SPACE, scored_per_step
from fairseq_nas.sampling.evolution import split_counts
from fairseq_nas.sampling.validator import SubnetScorer, make_batches
from fairseq_nas.space import Subnet, load_space
from helpers import TINY_SHRINKNAS, TRAIN_COMMON, env, fairseq_train, free_port, read_jsonl

DSS_ARGS = ["--sampler", "dss", "--dss-every-epochs", "1", "--dss-times", "2", "--dss-population", "8",
            "--dss-iterations", "2", "--dss-valid-tokens", "400", "--dss-divergence-subnets", "6",
            "--dss-divergence-tokens", "200"]


def _toy_space():
    return load_space("shrinknas_iwslt14")


def test_evolutionary_exploration_follows_algorithm_1():
    space = _toy_space()
    target = space.largest()

    def score(s):  # distance to the largest subnet in embed dims and depth
        return abs(s.encoder.embed_dim - target.encoder.embed_dim) + 50 * abs(s.decoder.depth - 6) + sum(
            lay.ffn_dim for lay in s.decoder.layers) / 1000

    initial = [space.sample(random.Random(i)) for i in range(20)]
    runs = [evolutionary_exploration(initial, space, score, random.Random(seed), population=10, iterations=4)
            for seed in (1, 1, 2)]
    res = runs[0]
    assert split_counts(10, 0.3, 0.4, 0.3) == (3, 4, 3)
    assert len(res.population) == 10 and len({s.key() for s in res.population}) == 10
    assert res.parent_scores == sorted(res.parent_scores) and len(res.parent_scores) == 3
    assert res.population[:3] == sorted(res.population[:3], key=score)  # parents first, best first
    assert res.best_score == score(res.best) <= min(res.initial_scores)
    assert res.best_score < min(res.initial_scores)  # exploration found better subnets than phase 1
    assert all(space.contains(s) for s in res.population)
    assert [s.key() for s in runs[1].population] == [s.key() for s in res.population]  # deterministic
    assert [s.key() for s in runs[2].population] != [s.key() for s in res.population]
    with pytest.raises(ValueError):
        evolutionary_exploration(initial, space, score, random.Random(0), population=10, iterations=1, keep=0.5)


def test_sampler_remembers_phase_one_and_samples_the_shrunk_set():
    space = _toy_space()
    sampler = DSSSampler(space, seed=3, remember=5)
    drawn = [sampler.subnet_for_update(u) for u in range(8)]
    assert sampler.subnet_for_update(7) is drawn[-1]  # micro-batches of one update: one subnet
    assert [s.key() for s in sampler.remembered()] == [s.key() for s in drawn[-5:]]  # capped, most recent
    subset = drawn[:3]
    sampler.apply({"index": 1, "space": [s.to_json() for s in subset], "best": subset[0].to_json()})
    keys = {s.key() for s in subset}
    assert all(sampler.subnet_for_update(u).key() in keys for u in range(8, 40))
    assert sampler.sample_space().finite and sampler.sample_space().size() == 3
    state = sampler.state_dict()
    torch.save(state, "/dev/null")  # plain values
    other = DSSSampler(space, seed=0)
    other.load_state_dict(json.loads(json.dumps(state)))
    assert other.state_dict() == state
    assert [other.subnet_for_update(u).key() for u in range(40, 60)] == [
        sampler.subnet_for_update(u).key() for u in range(40, 60)]


@pytest.fixture(scope="module")
def supernet_and_valid(trained_supernet, demo_data):
    from fairseq import checkpoint_utils

    import fairseq_nas

    fairseq_nas.register()
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(trained_supernet)], arg_overrides={"data": str(demo_data)})
    task.load_dataset("valid")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: more threads only wait for each other
    yield models[0], task.dataset("valid"), task.target_dictionary.pad()
    torch.set_num_threads(threads)


def test_dss_step_shrinks_the_space_and_lowers_its_mean_loss(supernet_and_valid):
    model, valid, pad = supernet_and_valid
    options = DSSOptions(population=12, iterations=3, valid_tokens=10**6, divergence_subnets=8,
                         divergence_tokens=300)

    def run(seed: int):
        model.train()
        sampler = DSSSampler(model.space, seed=seed)
        for u in range(40):  # phase 1: what training sampled
            sampler.subnet_for_update(u)
        before = sampler.sample_space()
        model.set_subnet(model.space.smallest())
        result = dss_step(model, sampler, options, valid, pad, index=1, epoch=2, update=40)
        assert model.training and model.active_subnet == model.space.smallest()  # restored
        sampler.apply(result)
        return before, sampler, result

    before, sampler, result = run(seed=5)
    after = sampler.sample_space()
    row = result["row"]
    assert not before.finite and after.finite
    assert after.size() == row["space_size_after"] <= 12 < before.size() == row["space_size_before"]
    assert row["initial_subnets"] == 40 and row["best_loss"] == row["score_kept"]["min"]
    assert row["evaluated"] == scored_per_step(options, 40) == 40 + 8 * 2  # what DSS's cost is counted from
    assert row["divergence_before"]["n"] == row["divergence_after"]["n"] == 8
    assert len(result["divergence"]["before"]) == 8

    # the mean validation loss of the space, on one batch (the whole valid split)
    scorer = SubnetScorer(model, make_batches(valid, range(len(valid)), 2000), pad)
    rng = random.Random(0)
    loss_before = statistics.fmean(scorer.loss(before.sample(rng)) for _ in range(24))
    loss_after = statistics.fmean(scorer.loss(s) for s in after.subnets)
    assert loss_after < loss_before, (loss_before, loss_after)

    # deterministic given the seed (and the weights); another seed explores differently
    _, again, result2 = run(seed=5)
    assert result2["space"] == result["space"] and result2["best"] == result["best"]
    assert result2["divergence"] == result["divergence"]
    _, other, result3 = run(seed=6)
    assert result3["space"] != result["space"]


def test_dss_params_penalty_keeps_subnets_under_the_limit(supernet_and_valid):
    from fairseq_nas.sampling.validator import subnet_params

    model, valid, pad = supernet_and_valid
    space = model.space
    limit = (subnet_params(model, space.smallest()) + subnet_params(model, space.largest())) // 2
    sampler = DSSSampler(space, seed=1)
    for u in range(20):
        sampler.subnet_for_update(u)
    options = DSSOptions(population=10, iterations=3, valid_tokens=300, divergence_subnets=0, max_params=limit,
                         penalty_weight=100.0, penalty_fn="test_dss:one_layer_decoders_only")
    result = dss_step(model, sampler, options, valid, pad, index=1)
    best = Subnet.from_json(result["best"])
    assert subnet_params(model, best) <= limit and best.decoder.depth == 1  # both penalties steer the search
    assert result["row"]["penalized"] and result["row"]["divergence_reduction"] is None
    assert all(Subnet.from_json(s).decoder.depth == 1 for s in result["space"][:3])  # the kept parents


def one_layer_decoders_only(subnet, model) -> float:
    """A `--dss-penalty-fn` hook for the test above."""
    return 0.0 if subnet.decoder.depth == 1 else 1000.0


def test_task_defaults_are_dss_options_and_the_default_cost_is_what_the_readme_states():
    """The task's --dss-* defaults come from DSSOptions (one source); with them a DSS at the recipe
    (10 epochs of ~1,100 updates remembered) scores 200 remembered + 2 x 140 children = 480 subnets."""
    import dataclasses

    from fairseq_nas.tasks.supernet_translation import SupernetTranslationConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SupernetTranslationConfig)}
    for name in DSSOptions.__dataclass_fields__:
        assert defaults[f"dss_{name}"] == getattr(DSSOptions(), name), name
    assert scored_per_step(DSSOptions(), 11000) == 480


def test_options_are_checked_and_logs_parsed():
    from fairseq_nas.errors import FairseqNasError
    from fairseq_nas.report.dss import parse_fairseq_log

    DSSOptions().check()
    for bad in (dict(keep=0.5), dict(population=0), dict(mutation_prob=2.0)):
        with pytest.raises(FairseqNasError):
            DSSOptions(**bad).check()
    assert [DSSOptions(every_epochs=10, times=5).due(e) for e in (1, 10, 11, 21, 51, 61)] == [0, 0, 1, 2, 5, 5]
    log = parse_fairseq_log(
        '2026-01-01 | INFO | train_inner | {"epoch": 1, "loss": "9.5", "num_updates": "2"}\n'
        '2026-01-01 | INFO | valid | {"epoch": 1, "valid_loss": "9.1", "valid_loss_smallest": "9.3", '
        '"valid_num_updates": "2"}\n'
        "2026-01-01 | INFO | train_inner | epoch 001:      4 / 7 loss=9.2, nll_loss=9.1, num_updates=4, lr=0.1\n"
        "2026-01-01 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.9 | loss_largest 8.9 | "
        "num_updates 4\n")
    assert log.train == [(2, 9.5), (4, 9.2)]
    assert log.valid == {"valid_loss": [(2, 9.1), (4, 8.9)], "valid_loss_smallest": [(2, 9.3)],
                         "valid_loss_largest": [(4, 8.9)]}


def _train(data, save_dir, max_update, log):
    return fairseq_train(data, save_dir, TINY_SHRINKNAS + DSS_ARGS + [
        "--max-update", str(max_update), "--seed", "4", "--subnet-log", str(log), "--save-interval-updates", "5",
        "--no-epoch-checkpoints"])


def _dss_rows(save_dir):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(save_dir / DSS_LOG)]


def test_dss_training_resume_equals_an_uninterrupted_run(demo_data, tmp_path):
    # 7 updates per epoch: DSS 1 before epoch 2 (update 7), DSS 2 before epoch 3 (update 14)
    proc = _train(demo_data, tmp_path / "a", 21, tmp_path / "a.jsonl")
    (tmp_path / "a.log").write_text(proc.stdout + proc.stderr)
    _train(demo_data, tmp_path / "b", 10, tmp_path / "b.jsonl")  # runs DSS 1, stops mid-epoch 2
    _train(demo_data, tmp_path / "b", 21, tmp_path / "b.jsonl")  # must not redo DSS 1 nor skip DSS 2
    a_rows, b_rows = _dss_rows(tmp_path / "a"), _dss_rows(tmp_path / "b")
    assert [(r["dss"], r["epoch"], r["update"]) for r in a_rows] == [(1, 2, 7), (2, 3, 14)]
    assert a_rows[0] == b_rows[0]  # before the resume: the same weights, the very same DSS
    # fairseq itself resumes mid-epoch with the same batch shapes but not the same sentences in
    # them, so after the mid-epoch resume losses differ slightly; the DSS decisions do not
    decisions = ("dss", "epoch", "update", "space_before", "space_size_before", "space_size_after",
                 "initial_subnets", "best")
    assert [[r[k] for k in decisions] for r in a_rows] == [[r[k] for k in decisions] for r in b_rows]
    assert (tmp_path / "a" / DSS_SPACE).read_text() == (tmp_path / "b" / DSS_SPACE).read_text()
    assert a_rows[0]["space_size_after"] <= 8 < a_rows[0]["space_size_before"]
    assert json.loads((tmp_path / "a" / DSS_BEST).read_text()) == json.loads((tmp_path / "b" / DSS_BEST).read_text())
    assert json.loads((tmp_path / "a" / DSS_BEST).read_text()) == a_rows[-1]["best"]
    a_log, b_log = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")
    assert [r["update"] for r in b_log] == list(range(21))
    assert [r["subnet"] for r in a_log] == [r["subnet"] for r in b_log]
    space = {json.dumps(json.loads(line), sort_keys=True)
             for line in (tmp_path / "a" / DSS_SPACE).read_text().splitlines()}
    assert all(json.dumps(r["subnet"], sort_keys=True) in space for r in a_log[14:])  # trained the shrunk set
    div = read_jsonl(tmp_path / "a" / DSS_DIVERGENCE)
    # 6 subnets a side, drawn without replacement: all of a shrunk set smaller than that
    assert [len(r["before"]) for r in div] == [6, min(6, a_rows[0]["space_size_after"])]
    assert [len(r["after"]) for r in div] == [min(6, r["space_size_after"]) for r in a_rows]
    state = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)["model"]["_extra_state"]["sampler"]
    assert state["kind"] == "dss" and state["dss_done"] == 2 and state["updates_seen"] == 21
    out = (tmp_path / "a.log").read_text()
    assert "valid_loss_largest" in out

    # the report draws the divergence histograms and the loss curves
    from fairseq_nas.cli.main import main

    assert main(["report", "dss", str(tmp_path / "a"), "--log", str(tmp_path / "a.log"),
                 "--out", str(tmp_path / "report")]) == 0
    for name in ("dss_divergence.png", "dss_losses.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000


def test_two_cpu_ranks_end_with_the_same_sample_space(demo_data, tmp_path):
    port = free_port()
    log = tmp_path / "subnets.jsonl"
    procs = []
    for rank in (0, 1):
        args = [sys.executable, "-m", "fairseq_cli.train", str(demo_data), "--save-dir", str(tmp_path / "ck"),
                *TRAIN_COMMON, *TINY_SHRINKNAS, *DSS_ARGS, "--dss-times", "1", "--max-update", "9", "--no-save",
                "--subnet-log", str(log), "--cpu", "--distributed-world-size", "2", "--distributed-rank", str(rank),
                "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
                "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=env()))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    assert "DSS 1 applied on rank 0" in outs[0]
    rows = read_jsonl(log)
    by_rank = {r: {row["update"]: row["subnet"] for row in rows if row["rank"] == r} for r in (0, 1)}
    assert by_rank[0] == by_rank[1] and sorted(by_rank[0]) == list(range(9))
    # every row names the sample space it was drawn from: the YAML space, then the shrunk set
    spaces = {r: [row["space"] for row in rows if row["rank"] == r] for r in (0, 1)}
    dss_update = read_jsonl(tmp_path / "ck" / DSS_LOG)[0]["update"]
    assert spaces[0] == spaces[1]
    assert set(spaces[1][:dss_update]) == {"yaml"} and len(set(spaces[1][dss_update:])) == 1
    assert spaces[1][-1] == space_digest((tmp_path / "ck" / DSS_SPACE).read_text().splitlines())
    space = {json.dumps(json.loads(line), sort_keys=True)
             for line in (tmp_path / "ck" / DSS_SPACE).read_text().splitlines()}
    assert 0 < dss_update < 9
    assert all(json.dumps(by_rank[1][u], sort_keys=True) in space for u in range(dss_update, 9))


def test_sample_space_of_a_set_is_uniform_over_it():
    space = _toy_space()
    subnets = [space.sample(random.Random(i)) for i in range(3)]
    ss = SampleSpace(space, subnets)
    rng = random.Random(0)
    counts = {s.key(): 0 for s in subnets}
    for _ in range(300):
        counts[ss.sample(rng).key()] += 1
    assert all(60 < c < 140 for c in counts.values())


@pytest.mark.parametrize("share", [False, True], ids=["separate", "shared"])
def test_subnet_params_is_the_exported_models_parameter_count(share):
    """DSS's parameter penalty and collect count params analytically; the export is the truth."""
    from fairseq_nas.models.export import export_model
    from fairseq_nas.sampling.validator import subnet_params
    from model_utils import build_supernet

    model = build_supernet("shrinknas_iwslt14", share_all_embeddings=share)
    rng = random.Random(3)
    for subnet in [model.space.largest(), model.space.smallest()] + [model.space.sample(rng) for _ in range(4)]:
        exported = export_model(model, subnet)
        unique = {id(p): p.numel() for p in exported.parameters()}
        assert subnet_params(model, subnet) == sum(unique.values())


SHARD_WORKER = r"""
import json, sys
import torch, torch.distributed as dist
import fairseq_nas
fairseq_nas.register()
from fairseq import checkpoint_utils
from fairseq_nas.sampling import DSSOptions, DSSSampler, ScoreShard, dss_step

ckpt, data, rank, world, port, out = sys.argv[1:7]
rank, world = int(rank), int(world)
torch.set_num_threads(1)
shard = None
if world > 1:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    def reduce(t):
        dist.all_reduce(t)
        return t
    shard = ScoreShard(rank, world, reduce)
models, _, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": data})
task.load_dataset("valid")
model = models[0]
sampler = DSSSampler(model.space, seed=5)
for u in range(30):
    sampler.subnet_for_update(u)
calls = []
if shard is not None:  # count what this rank scored
    from fairseq_nas.sampling import validator
    original = validator.SubnetScorer.loss
    def counted(self, subnet):
        calls.append(subnet.key())
        return original(self, subnet)
    validator.SubnetScorer.loss = counted
options = DSSOptions(population=10, iterations=2, valid_tokens=600, divergence_subnets=4, divergence_tokens=200)
result = dss_step(model, sampler, options, task.dataset("valid"), task.target_dictionary.pad(), index=1, shard=shard)
json.dump({"space": result["space"], "best": result["best"], "best_loss": result["row"]["best_loss"],
           "evaluated": result["row"]["evaluated"], "scored_here": len(calls)}, open(out, "w"))
"""


def test_dss_on_two_gloo_ranks_shards_the_scoring_and_gives_the_one_rank_result(trained_supernet, demo_data,
                                                                                 tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(SHARD_WORKER)

    def start(rank: int, world: int, port: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(trained_supernet), str(demo_data), str(rank),
                                 str(world), str(port), str(tmp_path / f"r{world}_{rank}.json")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())

    port = free_port()
    procs = [start(0, 1, 0), start(0, 2, port), start(1, 2, port)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
    one, r0, r1 = (json.loads((tmp_path / n).read_text()) for n in ("r1_0.json", "r2_0.json", "r2_1.json"))
    for r in (r0, r1):
        assert r["space"] == one["space"] and r["best"] == one["best"] and r["best_loss"] == one["best_loss"]
    # each rank scored about half of the subnets, together all of them once
    assert r0["scored_here"] + r1["scored_here"] == one["evaluated"] == r0["evaluated"]
    assert abs(r0["scored_here"] - r1["scored_here"]) <= 2
