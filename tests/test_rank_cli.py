"""fairseq-nas rank on synthetic rows whose target is a known function of the subnet."""
from __future__ import annotations

import json
import random
import re

import pytest

from fairseq_nas.cli.main import main
from fairseq_nas.collect.rows import space_sidecar
from fairseq_nas.space import load_space


def _loss(s, rng: random.Random) -> float:
    """Lower with wider embeddings and deeper decoders, plus a little noise."""
    return (6.0 - 0.004 * s.encoder.embed_dim - 0.006 * s.decoder.embed_dim - 0.05 * len(s.decoder.layers)
            + rng.gauss(0.0, 0.02))


def _write_rows(path, n: int, space, seed: int = 0, target: str = "valid_loss", with_space: bool = True) -> list:
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < n:
        s = space.sample(rng)
        if s.key() in seen:
            continue
        seen.add(s.key())
        row = {"index": len(rows), "subnet": s.to_dict(), target: _loss(s, rng)}
        if with_space:
            row["space"] = space.name
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _tau(text: str, model: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(model))
    return float(line[len(line.split(")")[0]) + 1:].split()[0])


def test_rank_pairwise_reports_tau_writes_outputs_and_prunes(tmp_path, capsys):
    space = load_space("shrinknas_iwslt14")
    rows_path = tmp_path / "archs.jsonl"
    _write_rows(rows_path, 150, space)
    out = tmp_path / "rank"
    assert main(["rank", str(rows_path), "--out", str(out), "--prune", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "lower is better, so it is fit on -valid_loss" in text
    assert "120 train / 30 held-out" in text
    tau_pair = _tau(text, "pairwise GBDT (RankNAS)")
    tau_reg = _tau(text, "GBDT regression (baseline)")
    assert tau_pair > 0.6 and tau_reg > 0.3

    for name in ("ranker/ranker.json", "metrics.json", "importance.json", "importance.png",
                 "pruned_space.yaml", "fixed.json"):
        assert (out / name).is_file(), name
    assert load_space(str(out / "space.yaml")) == space  # the ranker's feature space, where search looks
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["pairwise"]["kendall_tau"] == pytest.approx(tau_pair, abs=1e-4)
    assert metrics["n_test"] == 30 and metrics["direction"] == "lower" and metrics["use_case"] == "architecture ranker"

    from fairseq_nas.ranking import load_ranker
    from fairseq_nas.space import encode_many

    ranker = load_ranker(out / "ranker")
    big, small = space.largest(), space.smallest()
    s_big, s_small = ranker.predict(encode_many([big, small], space))
    assert s_big > s_small  # the largest subnet has the lowest loss: the highest score

    imp = json.loads((out / "importance.json").read_text())["importance"]
    assert imp["dec.embed_dim"] > 1.15 and imp["enc.embed_dim"] > 1.15
    pruned = load_space(str(out / "pruned_space.yaml"))  # a valid space
    fixed = json.loads((out / "fixed.json").read_text())["fixed"]
    assert "dec.embed_dim" not in fixed and "enc.embed_dim" not in fixed and fixed
    assert pruned.decoder.embed_dim == space.decoder.embed_dim
    assert pruned.num_subnets() < space.num_subnets()
    assert all(pruned.contains(pruned.sample(random.Random(i))) and space.contains(pruned.sample(random.Random(i)))
               for i in range(5))


def test_rank_latency_target_with_sidecar_space_and_lambdarank(tmp_path, capsys):
    space = load_space("hat_iwslt14")
    rows_path = tmp_path / "latency.jsonl"
    rows = _write_rows(rows_path, 60, space, target="latency_ms", with_space=False)
    with open(rows_path, "a") as f:  # repeated measurements of two subnets
        for r in rows[:2]:
            f.write(json.dumps(dict(r, latency_ms=r["latency_ms"] + 1.0)) + "\n")
    space.save(space_sidecar(rows_path))
    out = tmp_path / "lat"
    assert main(["rank", str(rows_path), "--target", "latency_ms", "--objective", "lambdarank",
                 "--out", str(out), "--train-fraction", "0.7"]) == 0
    text = capsys.readouterr().out
    assert "latency model: LambdaRank GBDT (AceNAS) on latency_ms" in text
    assert "rank: 60 subnets" in text and "2 repeated rows" in text
    assert "LambdaRank GBDT (AceNAS)" in text and "GBDT regression (baseline)" in text
    assert str(space_sidecar(rows_path)) in text
    assert json.loads((out / "metrics.json").read_text())["use_case"] == "latency model"
    assert not (out / "pruned_space.yaml").exists()


@pytest.mark.parametrize("bad, pattern", [
    ('{"subnet": {"encoder"', r"archs.jsonl:4: not valid JSON"),
    ('{"index": 3, "space": "shrinknas_iwslt14"}', r"archs.jsonl:4: subnet: missing"),
    ("NO_TARGET", r"archs.jsonl:4: valid_loss: missing"),
    ("OUTSIDE", r"archs.jsonl:4: subnet .*encoder.embed_dim"),
    ("STRING_TARGET", r"archs.jsonl:4: valid_loss: expected a finite number"),
])
def test_rank_malformed_row_is_a_one_line_error_with_its_line_number(tmp_path, capsys, bad, pattern):
    space = load_space("shrinknas_iwslt14")
    rows_path = tmp_path / "archs.jsonl"
    rows = _write_rows(rows_path, 6, space)
    row = dict(rows[3])
    if bad == "NO_TARGET":
        del row["valid_loss"]
        bad = json.dumps(row)
    elif bad == "OUTSIDE":
        row["subnet"] = json.loads(json.dumps(row["subnet"]))
        row["subnet"]["encoder"]["embed_dim"] = 512
        bad = json.dumps(row)
    elif bad == "STRING_TARGET":
        row["valid_loss"] = "4.2"
        bad = json.dumps(row)
    lines = rows_path.read_text().splitlines()
    lines[3] = bad
    rows_path.write_text("\n".join(lines) + "\n")
    assert main(["rank", str(rows_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("fairseq-nas: error: "), err
    assert re.search(pattern, err), err
    assert not (tmp_path / "o").exists()


def test_rank_skips_a_truncated_last_line(tmp_path, capsys):
    space = load_space("shrinknas_iwslt14")
    rows_path = tmp_path / "archs.jsonl"
    _write_rows(rows_path, 20, space)
    with open(rows_path, "a") as f:
        f.write('{"index": 20, "subnet": {"enc')
    assert main(["rank", str(rows_path), "--out", str(tmp_path / "o"), "--objective", "regression"]) == 0
    captured = capsys.readouterr()
    assert "skipped a truncated last line" in captured.err
    assert "rank: 20 subnets" in captured.out


def test_rank_latency_target_fits_a_latency_model_that_search_accepts(tmp_path, capsys):
    from fairseq_nas.ranking import LatencyModel, load_ranker

    space = load_space("hat_iwslt14")
    rows_path = tmp_path / "latency.jsonl"
    rows = _write_rows(rows_path, 60, space, target="latency_ms")
    for r in rows:  # latencies are positive
        r["latency_ms"] = 20.0 - 5.0 * r["latency_ms"]
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "lat"
    assert main(["rank", str(rows_path), "--target", "latency_ms", "--baseline", "regression",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "latency model: linear + GBDT latency model on latency_ms" in text and "within 10%" in text
    model = load_ranker(out / "ranker")
    assert isinstance(model, LatencyModel)
    metrics = json.loads((out / "metrics.json").read_text())["models"]["latency"]
    assert metrics["kendall_tau"] > 0.5 and metrics["within_10pct"] > 0.5  # predicts ms, not a negated score


@pytest.mark.parametrize("target", ["drift_corrected_ms", "total_ms.median"])
def test_rank_on_other_latency_fields_fits_the_latency_model(tmp_path, capsys, target):
    """`latency` rows' drift-corrected latency (what the recipes fit on) and a dotted time field are
    latency targets too: a LatencyModel, not an architecture ranker."""
    from fairseq_nas.ranking import LatencyModel, load_ranker

    space = load_space("hat_iwslt14")
    rows_path = tmp_path / "latency.jsonl"
    rows = _write_rows(rows_path, 40, space, target="latency_ms")
    for r in rows:
        ms = 20.0 - 5.0 * r.pop("latency_ms")
        r["drift_corrected_ms"], r["total_ms"] = ms, {"median": ms}
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "lat"
    assert main(["rank", str(rows_path), "--target", target, "--out", str(out)]) == 0
    assert f"latency model: linear + GBDT latency model on {target}" in capsys.readouterr().out
    assert isinstance(load_ranker(out / "ranker"), LatencyModel)
    assert json.loads((out / "metrics.json").read_text())["use_case"] == "latency model"


def test_prune_keeps_the_groups_another_run_found_important(tmp_path, capsys):
    """Hardware-aware pruning: a group that does not matter for the loss but does for latency
    (here enc.heads, from a latency model's importance.json) stays searchable."""
    space = load_space("shrinknas_iwslt14")
    rows_path = tmp_path / "archs.jsonl"
    _write_rows(rows_path, 150, space)
    plain, kept = tmp_path / "plain", tmp_path / "kept"
    assert main(["rank", str(rows_path), "--out", str(plain), "--prune", "--seed", "1"]) == 0
    assert "enc.heads" in json.loads((plain / "fixed.json").read_text())["fixed"]  # the loss ignores heads

    latency_importance = tmp_path / "latency_importance.json"
    latency_importance.write_text(json.dumps({"importance": {"enc.heads": 2.0, "dec.layers": 1.01}}))
    capsys.readouterr()
    assert main(["rank", str(rows_path), "--out", str(kept), "--prune", "--seed", "1",
                 "--keep-important", str(latency_importance)]) == 0
    assert f"kept enc.heads: important in {latency_importance}" in capsys.readouterr().out
    fixed = json.loads((kept / "fixed.json").read_text())["fixed"]
    assert "enc.heads" not in fixed
    assert load_space(str(kept / "pruned_space.yaml")).encoder.heads == space.encoder.heads
    assert json.loads((kept / "metrics.json").read_text())["pruned"]["kept_for"] == {"enc.heads":
                                                                                    str(latency_importance)}

    for text, field in (("{not json", "not JSON"), (json.dumps({"importance": {"enc.colour": 2}}), "enc.colour"),
                        (json.dumps({"importance": [1, 2]}), "field 'importance' must map")):
        latency_importance.write_text(text)
        assert main(["rank", str(rows_path), "--out", str(kept), "--prune",
                     "--keep-important", str(latency_importance)]) == 2
        captured = capsys.readouterr()
        err = captured.err
        assert f"--keep-important {latency_importance}" in err and field in err and len(err.splitlines()) == 1
        assert "ranking quality" not in captured.out  # refused before any fitting
    latency_importance.write_text(json.dumps({"importance": {"enc.heads": 2.0}}))
    assert main(["rank", str(rows_path), "--out", str(kept), "--keep-important", str(latency_importance)]) == 2
    assert "--keep-important only matters with --prune" in capsys.readouterr().err
