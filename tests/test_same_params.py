"""One subnet has one parameter count and one FLOP count in every file: collect's archs.jsonl,
latency.jsonl, search's topk.jsonl and the exported checkpoint. The supernet here shares its
embeddings although its space file does not say so (fairseq-train --share-all-embeddings); the
checkpoint's space then says so, and latency and search, given that space and no flag, count as
the supernet built them."""
from __future__ import annotations

import json
import random

import torch

from fairseq_nas.cli.main import main
from fairseq_nas.ranking import PairwiseRanker
from fairseq_nas.space import Subnet, encode_many, load_space
from helpers import read_jsonl


def _exported_params(path) -> int:
    """Parameters of an exported checkpoint, a tensor tied to another (shared embeddings) counted once."""
    model = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return sum({t.untyped_storage().data_ptr(): t.numel() for t in model.values()}.values())


def test_one_subnet_has_the_same_params_in_every_file(custom_space_supernet, demo_data, tmp_path, capsys):
    torch.set_num_threads(1)
    archs = tmp_path / "archs.jsonl"
    assert main(["collect", str(demo_data), "--supernet", str(custom_space_supernet), "-n", "2", "--seed", "1",
                 "--eval-sentences", "8", "--no-progress", "--cpu", "--out", str(archs)]) == 0
    space_file = tmp_path / "archs.space.yaml"
    space = load_space(str(space_file))
    assert space.share_all_embeddings is True  # the checkpoint's space says what the supernet did

    latency = tmp_path / "latency.jsonl"
    assert main(["latency", "--space", str(space_file), "--subnets", str(archs), "--dict", str(demo_data),
                 "--runs", "2", "--warmup", "1", "--rounds", "1", "--no-progress", "--out", str(latency)]) == 0

    subnets = [space.sample(random.Random(i)) for i in range(30)]
    X = encode_many(subnets, space)
    PairwiseRanker(min_child_samples=3).fit(X, [s.decoder.depth + s.encoder.embed_dim for s in subnets]).save(
        tmp_path / "rank" / "ranker")
    search = tmp_path / "search"
    assert main(["search", "--space", str(space_file), "--ranker", str(tmp_path / "rank"), "--dict", str(demo_data),
                 "--no-measure", "--population", "8", "--parents", "2", "--mutations", "3", "--crossovers", "3",
                 "--generations", "1", "--top-k", "2", "--no-progress", "--out", str(search)]) == 0
    capsys.readouterr()

    reported: dict[str, dict[str, list[int]]] = {}
    for file, rows in (("archs.jsonl", read_jsonl(archs)), ("latency.jsonl", read_jsonl(latency)),
                       ("topk.jsonl", read_jsonl(search / "topk.jsonl"))):
        for r in rows:
            entry = reported.setdefault(Subnet.from_dict(r["subnet"]).key(), {"subnet": r["subnet"]})
            entry.setdefault("params", []).append((file, r["params"]))
            if "flops" in r:
                entry.setdefault("flops", []).append((file, r["flops"]))
    assert len(reported) >= 3
    for i, entry in enumerate(reported.values()):
        (tmp_path / f"s{i}.json").write_text(json.dumps(entry["subnet"]))
        assert main(["export", "--supernet", str(custom_space_supernet), "--subnet", str(tmp_path / f"s{i}.json"),
                     "--out", str(tmp_path / f"s{i}.pt")]) == 0
        exported = _exported_params(tmp_path / f"s{i}.pt")
        assert {n for _, n in entry["params"]} == {exported}, (entry["params"], exported)
        assert len({n for _, n in entry.get("flops", [])}) <= 1, entry["flops"]
    both = [e for e in reported.values() if len(e.get("flops", [])) == 2]
    assert len(both) == 2  # the collected subnets have FLOPs in archs.jsonl and in latency.jsonl
