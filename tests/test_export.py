"""Export: the standalone nas_subnet model equals the supernet with the subnet set, holds
only the subnet's weights, and works with fairseq-generate."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from fairseq_nas.models.export import export_model
from helpers import USER_DIR, env, run_cli
from model_utils import SMALL_SPACES, build_supernet


def _io(dictionary, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(dictionary.nspecial, len(dictionary), (3, 8), generator=g)
    src[2, :2] = dictionary.pad()
    tgt = torch.randint(dictionary.nspecial, len(dictionary), (3, 6), generator=g)
    return src, src.ne(dictionary.pad()).sum(1), tgt


def _unused_tensors(model) -> list[str]:
    """Tensors of `model` that get no gradient in a training step (every token in the input)."""
    model.train()  # dropout is 0 in these models
    model.zero_grad(set_to_none=True)
    d = model.decoder.dictionary
    src = torch.arange(d.nspecial, len(d)).repeat(2, 1)
    out, _ = model(src, src.ne(d.pad()).sum(1), src)
    (out * torch.randn_like(out)).sum().backward()
    model.eval()
    # key biases shift every logit of a query equally: softmax makes their gradient exactly 0
    return [n for n, p in model.named_parameters()
            if not n.endswith("k_proj.bias") and (p.grad is None or not p.grad.ne(0).any())]


@pytest.mark.parametrize("space", sorted(SMALL_SPACES))
def test_export_equals_supernet_and_holds_only_the_subnet(space):
    torch.manual_seed(0)
    supernet = build_supernet(space, dropout=0.0)
    rng = random.Random(2)
    for _ in range(2):
        subnet = supernet.space.sample(rng)
        supernet.set_subnet(subnet)
        exported = export_model(supernet.eval(), subnet).eval()
        src, lengths, tgt = _io(supernet.decoder.dictionary)
        with torch.no_grad():
            ref, _ = supernet(src, lengths, tgt)
            out, _ = exported(src, lengths, tgt)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
            enc = exported.encoder(src, lengths)
            state: dict = {}
            steps = [exported.decoder(tgt[:, : t + 1], enc, incremental_state=state)[0] for t in range(tgt.size(1))]
            torch.testing.assert_close(torch.cat(steps, 1), ref, atol=1e-5, rtol=0)
        n_exported = sum(p.numel() for p in exported.parameters())
        assert n_exported < sum(p.numel() for p in supernet.parameters())
        assert _unused_tensors(exported) == [], subnet.to_json()


def test_export_cli_and_generate_match_the_supernet(trained_supernet, demo_data, tmp_path):
    from fairseq_nas.models.export import load_supernet_checkpoint, supernet_from_checkpoint

    space, _ = supernet_from_checkpoint(load_supernet_checkpoint(trained_supernet))
    subnet = space.sample(random.Random(4))
    sub_file = tmp_path / "subnet.json"
    sub_file.write_text(subnet.to_json())
    out = tmp_path / "subnet.pt"
    proc = subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", "export", "--supernet",
                           str(trained_supernet), "--subnet", str(sub_file), "--out", str(out)],
                          capture_output=True, text=True, env=env())
    assert proc.returncode == 0, proc.stderr
    state = torch.load(out, weights_only=True)
    assert state["cfg"]["model"]["_name"] == "nas_subnet"
    assert json.loads(state["cfg"]["model"]["subnet"]) == subnet.to_dict()

    common = ["--user-dir", USER_DIR, "--beam", "5", "--batch-size", "16", "--required-batch-size-multiple", "1",
              "--gen-subset", "test", "--max-len-b", "30"]
    sup = run_cli("fairseq_cli.generate", [str(demo_data), "--path", str(trained_supernet), "--task",
                                           "supernet_translation", "--subnet", str(sub_file), *common])
    exp = run_cli("fairseq_cli.generate", [str(demo_data), "--path", str(out), *common])

    def hyps(text):
        return sorted(line.split("\t", 2)[::2] for line in text.splitlines() if line.startswith("H-"))

    h_sup, h_exp = hyps(sup.stdout), hyps(exp.stdout)
    assert len(h_sup) == 40 and h_sup == h_exp


def test_export_rejects_wrong_checkpoint_and_subnet(trained_supernet, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", "export", *args],
                              capture_output=True, text=True, env=env())

    not_ckpt = tmp_path / "x.pt"
    not_ckpt.write_text("hello")
    sub = tmp_path / "s.json"
    sub.write_text('{"encoder": {"embed_dim": 999, "layers": [{"operator": "self_attention", "ffn_dim": 8, '
                   '"heads": 2, "activation": "relu"}]}, "decoder": {"embed_dim": 16, "layers": [{"operator": '
                   '"self_attention", "ffn_dim": 8, "heads": 2, "activation": "relu", "enc_attn_layers": 1}]}}')
    r = run("--supernet", str(not_ckpt), "--subnet", str(sub), "--out", str(tmp_path / "o.pt"))
    assert r.returncode == 2 and r.stderr.strip().startswith(f"fairseq-nas: error: {not_ckpt}")
    r = run("--supernet", str(trained_supernet), "--subnet", str(sub), "--out", str(tmp_path / "o.pt"))
    assert r.returncode == 2 and "encoder" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o.pt").exists()
