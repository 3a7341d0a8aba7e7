"""The claim's protocol (fairseq_nas.report.claim, `fairseq-nas latency --checkpoints`): baselines
are fairseq transformers inside the space, trained models are timed together, and the report
judges each claim from the measured figures, saying first where one fails."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fairseq_nas.errors import FairseqNasError, SpaceError
from fairseq_nas.report.claim import Baseline, check_in_space, judge, parse_baselines, verdict_lines, write_report
from fairseq_nas.space import Subnet, parse_space
from helpers import TINY_SPACE_YAML, USER_DIR, env, read_jsonl, run_cli

TINY = Baseline(32, 2, 1, ffn_ratio=2, heads=2)


def _space():
    return parse_space(TINY_SPACE_YAML, source="tiny.yaml")


def test_parse_baselines_and_its_errors():
    assert parse_baselines("96:3:1, 128:3:2:1.5:2") == [Baseline(96, 3, 1), Baseline(128, 3, 2, 1.5, 2)]
    for bad, says in (("96x3x1", "EMBED:ENC_LAYERS:DEC_LAYERS"), ("", "no baseline"), ("96:3:1,96:3:1", "twice")):
        with pytest.raises(FairseqNasError, match=says):
            parse_baselines(bad)


def test_a_baseline_outside_the_space_is_refused_naming_the_field():
    check_in_space(TINY, _space())
    with pytest.raises(SpaceError, match="embed_dim"):
        check_in_space(Baseline(48, 2, 1, 2, 2), _space())
    with pytest.raises(SpaceError, match="heads"):
        check_in_space(Baseline(32, 2, 1, 2, 4), _space())


def _train_transformer(data, save, baseline: Baseline):
    run_cli("fairseq_cli.train", [str(data), "--user-dir", USER_DIR, *baseline.fairseq_args(), "--optimizer", "adam",
                                  "--lr", "1e-3", "--max-tokens", "1500", "--max-update", "2", "--save-dir", str(save),
                                  "--no-progress-bar", "--num-workers", "0", "--required-batch-size-multiple", "1",
                                  "--no-epoch-checkpoints", "--criterion", "cross_entropy"])
    return save / "checkpoint_last.pt"


def test_baseline_transformer_has_exactly_its_subnets_parameters(demo_data, tmp_path):
    """The fairseq transformer of a baseline and the standalone model of its subnet are the same
    architecture: the same parameter count, counted two independent ways."""
    from fairseq_nas.latency.costs import count_params
    from fairseq_nas.latency.measure import Protocol
    from fairseq_nas.latency.trained import checkpoint_fields, load_trained

    ck = _train_transformer(demo_data, tmp_path / "t", TINY)
    model = load_trained(ck, demo_data)
    vocab = len(model.encoder.dictionary)
    fields = checkpoint_fields(ck, model, Protocol(runs=1))
    assert fields["arch"] == "transformer"
    assert fields["params"] == count_params(Subnet.from_dict(TINY.subnet()), _space(), vocab, vocab, True)


def test_latency_of_checkpoints_measures_trained_models_together_and_resumes(demo_data, trained_supernet, tmp_path):
    ck = _train_transformer(demo_data, tmp_path / "t", TINY)
    sub = tmp_path / "sub.pt"
    subnet = {"encoder": {"embed_dim": 16, "layers": [{"operator": "self_attention", "ffn_dim": 32, "heads": 2,
                                                       "activation": "relu", "rpr_len": 0, "norm": "pre"}] * 2},
              "decoder": {"embed_dim": 16, "layers": [{"operator": "lightweight_conv", "ffn_dim": 32, "heads": 2,
                                                       "activation": "relu", "rpr_len": 0, "norm": "pre",
                                                       "enc_attn_layers": 1}]}}
    (tmp_path / "s.json").write_text(json.dumps(subnet))
    run_cli("fairseq_nas.cli.main", ["export", "--supernet", str(trained_supernet), "--subnet",
                                     str(tmp_path / "s.json"), "--out", str(sub)])
    out = tmp_path / "lat.jsonl"
    args = ["latency", "--checkpoints", str(ck), str(sub), "--dict", str(demo_data), "--runs", "4", "--warmup", "1",
            "--rounds", "2", "--src-len", "6", "--no-progress", "--out", str(out)]
    first = run_cli("fairseq_nas.cli.main", args)
    rows = read_jsonl(out)
    assert [r["checkpoint"] for r in rows] == [str(ck), str(sub)]
    assert [r["arch"] for r in rows] == ["transformer", "nas_subnet"]
    assert rows[1]["subnet"] == subnet and "subnet" not in rows[0]
    assert all(r["latency_ms"] > 0 and r["rounds"] == 2 and len(r["round_ms"]) == 2 for r in rows)
    assert "2 measured now" in first.stdout
    again = run_cli("fairseq_nas.cli.main", args)
    assert "0 measured now, 2 already there" in again.stdout and len(read_jsonl(out)) == 2
    bad = subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", "latency", "--checkpoints",
                          str(tmp_path / "s.json"), "--dict", str(demo_data), "--out", str(tmp_path / "x.jsonl")],
                         capture_output=True, text=True, env=env())
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "not a fairseq checkpoint" in bad.stderr


def _row(name, base, scratch, ft, updates=(100, 100, 25)):
    models = {}
    for key, (bleu, ms), up in zip(("baseline", "scratch", "finetune"), (base, scratch, ft), updates):
        models[key] = {"bleu": bleu, "sacrebleu": bleu, "sacrebleu_signature": "s", "latency_ms": ms,
                       "params": 1000, "updates": up, "subnet": None}
    return {"name": name, "limit_ms": base[1], "search_limit_ms": base[1], **models}


@pytest.mark.parametrize("base, scratch, ft, updates, claims", [
    ((20.0, 50.0), (22.0, 49.0), (23.0, 49.0), (100, 100, 25), (True, True)),
    ((20.0, 50.0), (22.0, 51.0), (23.0, 49.0), (100, 100, 25), (False, True)),    # slower: claim 1 fails
    ((20.0, 50.0), (19.0, 49.0), (19.5, 49.0), (100, 100, 25), (False, False)),   # ft below the baseline
    ((20.0, 50.0), (22.0, 49.0), (21.0, 49.0), (100, 100, 25), (True, False)),    # ft below from-scratch
    ((20.0, 50.0), (22.0, 49.0), (23.0, 49.0), (100, 100, 100), (True, False)),   # not fewer updates
    ((20.0, 50.0), (None, 49.0), (23.0, 49.0), (100, 100, 25), (None, None)),     # a figure missing
])
def test_judge(base, scratch, ft, updates, claims):
    got = judge(_row("b", base, scratch, ft, updates))
    assert (got["claim1"], got["claim2"]) == claims


def test_judge_takes_the_paired_round_ratio_over_the_medians():
    """Measured together in rounds, a model's per-round ratio to the baseline decides 'no more latency':
    a median that is lower by drift does not pass, and one that is higher by drift does not fail."""
    row = _row("b", (20.0, 50.0), (22.0, 49.0), (23.0, 51.0))
    row["scratch"]["latency_ratio"], row["finetune"]["latency_ratio"] = 1.04, 0.97
    assert (judge(row)["claim1"], judge(row)["claim2"]) == (False, True)


def test_report_rows_pair_the_rounds_of_each_model_with_the_baselines(tmp_path):
    claim = tmp_path / "claim"
    run = claim / "t-a"
    run.mkdir(parents=True)
    (claim / "baselines.txt").write_text("t-a\n")
    (run / "search.json").write_text(json.dumps({"baseline_ms": 50.0, "margin": 0.02, "limit_ms": 49.0}))
    # medians 45 (baseline), 54 (scratch: slower?) and 44 (fine-tuned: faster?); round by round the other way
    rounds = {"baseline": [40.0, 80.0, 45.0], "scratch": [36.0, 72.0, 54.0], "finetune": [44.0, 42.0, 49.5]}
    lat = []
    for model, bleu in (("baseline", 20.0), ("scratch", 22.5), ("finetune", 23.0)):
        (run / f"{model}.bleu.json").write_text(json.dumps({"tokenized_bleu": bleu, "sacrebleu": bleu,
                                                             "sacrebleu_signature": "s"}))
        lat.append({"checkpoint": str(run / model / "checkpoint_best.pt"), "params": 7,
                    "latency_ms": sorted(rounds[model])[1], "round_ms": rounds[model]})
    (claim / "latency.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lat))
    (row,) = write_report(tmp_path, "t")
    assert row["baseline"]["latency_ratio"] == 1.0 and "round_ms" not in row["scratch"]
    assert row["scratch"]["latency_ratio"] == pytest.approx(0.9)  # median of 0.9, 0.9, 1.2
    assert row["finetune"]["latency_ratio"] == pytest.approx(1.1)  # median of 1.1, 0.525, 1.1
    assert row["claim1"] is True and row["claim2"] is False
    assert "(1.100 x the baseline round by round)" in (tmp_path / "REPORT.md").read_text()


def test_the_report_says_first_where_a_claim_fails(tmp_path):
    (tmp_path / "claim").mkdir()
    rows = [_row("t-a", (20.0, 50.0), (22.0, 49.0), (23.0, 49.0)),
            _row("t-b", (30.0, 80.0), (29.0, 79.0), (30.0, 79.0))]
    for r in rows:
        r.update(judge(r))
    text = "\n".join(verdict_lines(rows))
    assert "Claim 1" in text and "holds at 1 of 2 limits" in text
    assert "t-b (80.00 ms, BLEU 30.00): from scratch BLEU 29.00 at 79.00 ms" in text
    # an empty run writes a report that claims nothing
    (tmp_path / "claim" / "baselines.txt").write_text("")
    assert write_report(tmp_path) == []
    assert (tmp_path / "REPORT.md").read_text().splitlines()[2] == "No baseline was run: nothing is claimed."
    assert (tmp_path / "comparison.jsonl").read_text() == ""


def test_report_reads_a_run_and_writes_rows_plot_and_verdict(tmp_path):
    claim = tmp_path / "claim"
    run = claim / "t-a"
    run.mkdir(parents=True)
    (claim / "baselines.txt").write_text("t-a\n")
    (run / "baseline.json").write_text(json.dumps(TINY.subnet()))
    (run / "found.json").write_text(json.dumps(TINY.subnet()))
    (run / "search.json").write_text(json.dumps({"baseline_ms": 50.0, "margin": 0.02, "limit_ms": 49.0}))
    lat = []
    for model, bleu, ms in (("baseline", 20.0, 50.0), ("scratch", 22.5, 48.0), ("finetune", 21.0, 48.5)):
        (run / f"{model}.bleu.json").write_text(json.dumps({"tokenized_bleu": bleu, "sacrebleu": bleu - 1,
                                                             "sacrebleu_signature": "nrefs:1|tok:13a"}))
        lat.append({"checkpoint": str(run / model / "checkpoint_best.pt"), "latency_ms": ms, "params": 7})
    (claim / "latency.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lat))
    rows = write_report(tmp_path, "t")
    assert rows == read_jsonl(tmp_path / "comparison.jsonl")
    (row,) = rows
    assert row["limit_ms"] == 50.0 and row["search_limit_ms"] == 49.0
    assert row["scratch"]["latency_ms"] == 48.0 and row["finetune"]["sacrebleu"] == 20.0
    assert row["claim1"] is True and row["claim2"] is False  # fine-tuned 21.0 < from scratch 22.5
    report = (tmp_path / "REPORT.md").read_text()
    assert report.index("Claim 2") < report.index("![BLEU against measured latency]")
    assert "FAILS at every limit" in report and "fine-tuned BLEU 21.00 at 48.50 ms" in report
    assert (tmp_path / "plots" / "claim.png").read_bytes()[:4] == b"\x89PNG"


def test_limit_is_the_measured_baseline_latency_less_the_margin(tmp_path):
    from fairseq_nas.report.claim import write_limit

    ck = tmp_path / "b" / "checkpoint_best.pt"
    lat = tmp_path / "lat.jsonl"
    lat.write_text(json.dumps({"checkpoint": str(ck), "latency_ms": 50.0}) + "\n")
    assert write_limit(lat, ck, 0.02, tmp_path / "search.json") == 49.0
    assert json.loads((tmp_path / "search.json").read_text()) == {"baseline_ms": 50.0, "margin": 0.02,
                                                                   "limit_ms": 49.0}
    with pytest.raises(FairseqNasError, match="no row for checkpoint"):
        write_limit(lat, tmp_path / "other.pt", 0.02, tmp_path / "s2.json")
    with pytest.raises(FairseqNasError, match="--margin"):
        write_limit(lat, ck, 1.5, tmp_path / "s3.json")


def test_limit_from_the_latency_model_is_its_figure_for_the_baselines_architecture(tmp_path):
    """limit --latency-model: the prediction for the baseline's architecture less the margin, whatever
    the baseline measured; the measured figure is kept beside it."""
    import random

    from fairseq_nas.ranking import LatencyModel
    from fairseq_nas.report.claim import predicted_ms, write_limit
    from fairseq_nas.space import encode_many, feature_names

    space = parse_space(TINY_SPACE_YAML)
    (tmp_path / "space.yaml").write_text(TINY_SPACE_YAML)
    rng = random.Random(0)
    subnets = [space.sample(rng) for _ in range(60)]

    def ms(s):  # linear in the dimensions
        return 5.0 + 0.1 * s.encoder.embed_dim + 3.0 * len(s.decoder.layers) + 0.01 * sum(
            lay.ffn_dim for lay in s.encoder.layers)

    model = LatencyModel(seed=0).fit(encode_many(subnets, space), [ms(s) for s in subnets],
                                     feature_names=feature_names(space))
    model.save(tmp_path / "lat" / "ranker")
    base = Subnet.from_dict(TINY.subnet())
    (tmp_path / "b.json").write_text(json.dumps(TINY.subnet()))
    pred = predicted_ms(tmp_path / "lat", tmp_path / "b.json", str(tmp_path / "space.yaml"))
    assert pred == pytest.approx(ms(base), rel=0.02)
    ck = tmp_path / "b" / "checkpoint_best.pt"
    lat = tmp_path / "lat.jsonl"
    lat.write_text(json.dumps({"checkpoint": str(ck), "latency_ms": 88.0}) + "\n")  # a slow moment
    limit = write_limit(lat, ck, 0.04, tmp_path / "search.json",
                        (tmp_path / "lat", tmp_path / "b.json", str(tmp_path / "space.yaml")))
    got = json.loads((tmp_path / "search.json").read_text())
    assert got["baseline_ms"] == 88.0 and got["predicted_ms"] == pytest.approx(pred, abs=1e-3)
    assert limit == got["limit_ms"] == pytest.approx(pred * 0.96, abs=1e-3)
    # a file that holds no latency model: one line naming it
    with pytest.raises(FairseqNasError, match="--latency-model"):
        predicted_ms(tmp_path / "nothing", tmp_path / "b.json", str(tmp_path / "space.yaml"))


def test_report_quotes_the_search_row_the_found_subnet_won_in(tmp_path):
    """A recalibrated search can measure the same subnet in two attempts: the report quotes the one it won."""
    from fairseq_nas.report.claim import _timed_with_baseline

    found = TINY.subnet()
    search = tmp_path / "claim" / "t-a" / "search"
    search.mkdir(parents=True)
    rows = [{"subnet": found, "attempt": 1, "meets_limit": False, "measured_latency_ms": 52.0,
             "measured": {"reference_ms": 50.0, "ratio": 1.04}},
            {"subnet": found, "attempt": 2, "meets_limit": True, "measured_latency_ms": 47.0,
             "measured": {"reference_ms": 49.0, "ratio": 0.96, "confirmation": {"ratio": 0.95, "meets": True}}}]
    (search / "topk.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = _timed_with_baseline(tmp_path, {"name": "t-a", "scratch": {"subnet": found}})
    assert got == ("; the search timed it at 47.00 ms against the baseline's 49.00 ms in the same rounds "
                   "(0.960 x it round by round), 0.950 x again in fresh rounds")
    assert _timed_with_baseline(tmp_path, {"name": "other", "scratch": {"subnet": found}}) == ""
