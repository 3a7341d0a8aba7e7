"""The end-to-end recipes scripts/iwslt14.sh and scripts/wmt14.sh, without running them:
bash syntax of every script, and a DRY_RUN=1 run whose printed commands carry the papers'
settings and are accepted by the real parsers (fairseq-train, fairseq-generate and each
fairseq-nas subcommand)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, env

RECIPES = ("iwslt14.sh", "wmt14.sh")


def _recipe(name: str, *args, work: Path, check=True, **variables) -> subprocess.CompletedProcess:
    e = env()
    e.update(DRY_RUN="1", WORK=str(work), GPUS="2")
    for k in ("ARCHIVE", "ARCHIVES", "LATENCY_MS", "DEVICE", "SAMPLER_ARGS", "LAUNCHER", "SUPERNET_EXTRA"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in variables.items()})
    proc = subprocess.run(["bash", str(REPO / "scripts" / name), *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=REPO, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _commands(stdout: str) -> list[list[str]]:
    """The printed commands as argv lists (a '> FILE' redirection dropped)."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        argv = shlex.split(line)
        if ">" in argv:
            argv = argv[:argv.index(">")]
        out.append(argv)
    return out


def _tool(argv: list[str]) -> str:
    return os.path.basename(argv[0]) if argv[0] != "bash" else os.path.basename(argv[1])


PARSE = r'''
import contextlib, io, json, os, sys
from fairseq import options
from fairseq_nas.cli.main import SUBCOMMANDS, build_parser, main

registered = {name for name, _, _ in SUBCOMMANDS}
results = []
for argv in json.load(sys.stdin):
    tool, r = os.path.basename(argv[0]), {}
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            if tool == "fairseq-nas":
                sub = argv[1]
                r["sub"] = sub
                if sub not in registered:
                    r["skipped"] = "not registered"
                    results.append(r)
                    continue
                try:
                    main([sub, "--help"])
                    r["help_exit"] = 0
                except SystemExit as e:
                    r["help_exit"] = e.code or 0
                args = build_parser(argv[1:]).parse_args(argv[1:])
            else:
                parser = options.get_training_parser() if tool == "fairseq-train" else options.get_generation_parser()
                args = options.parse_args_and_arch(parser, input_args=argv[1:])
        r["args"] = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))
                     and not callable(v)}
    except SystemExit as e:
        r["error"] = f"exit {e.code}: {err.getvalue().strip()[-500:]}"
    r["tool"] = tool
    results.append(r)
print("RESULTS" + json.dumps(results, default=str))
'''


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """Both recipes' dry-run commands, and what the real parsers make of them (one process)."""
    work = tmp_path_factory.mktemp("recipes")
    runs = {"iwslt14.sh": _recipe("iwslt14.sh", "--latency-ms", 120, "--archive", __file__, work=work / "iw"),
            "wmt14.sh": _recipe("wmt14.sh", "--sample-train", 1000, work=work / "wmt")}
    cmds = {name: _commands(proc.stdout) for name, proc in runs.items()}
    to_parse = [c for name in RECIPES for c in cmds[name] if _tool(c) in ("fairseq-train", "fairseq-generate",
                                                                           "fairseq-nas")]
    proc = subprocess.run([sys.executable, "-c", PARSE], input=json.dumps(to_parse), capture_output=True, text=True,
                          env=env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout[proc.stdout.rindex("RESULTS") + len("RESULTS"):])
    by_line = {shlex.join(c): p for c, p in zip(to_parse, parsed)}
    return work, runs, cmds, by_line


def test_every_script_passes_bash_syntax_check():
    scripts = sorted((REPO / "scripts").glob("*.sh")) + sorted((REPO / "data-prep").glob("*.sh"))
    assert {"iwslt14.sh", "wmt14.sh", "prepare-iwslt14.sh", "prepare-wmt14.sh"} <= {p.name for p in scripts}
    for path in scripts:
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{path}: {proc.stderr}"


@pytest.mark.parametrize("name", RECIPES)
def test_dry_run_prints_every_stage_with_the_papers_settings(dry_runs, name):
    work, runs, cmds, _ = dry_runs
    text = runs[name].stdout
    assert not work.joinpath("iw").exists() and not work.joinpath("wmt").exists()  # a dry run writes nothing
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # the output is a valid script
    stages = [line.split()[2] for line in text.splitlines() if line.startswith("# stage ")]
    assert stages == ["data", "supernet", "latency", "collect", "rank", "latency_model", "search", "export",
                      "finetune", "evaluate"]
    tools = [_tool(c) for c in cmds[name]]
    assert tools[0] == f"prepare-{name}" and tools.count("fairseq-train") == 2 and "fairseq-generate" in tools
    supernet, finetune = (" ".join(shlex.quote(a) for a in c) for c in cmds[name] if _tool(c) == "fairseq-train")
    for setting in ("--task supernet_translation", "--optimizer adam", "--adam-betas '(0.9, 0.98)'", "--lr 5e-4",
                    "--lr-scheduler inverse_sqrt", "--warmup-updates 10000", "--max-tokens 4096",
                    "--max-update 50000", "--criterion label_smoothed_cross_entropy", "--label-smoothing 0.1",
                    "--ddp-backend legacy_ddp", "--sampler dss --dss-every-epochs 10 --dss-times 5",
                    "--distributed-world-size 2"):
        assert setting in supernet, setting
    for setting in ("--arch nas_subnet", "--max-update 30000", "--lr 5e-4", "--warmup-updates 10000",
                    "--max-tokens 4096", "--distributed-world-size 2"):
        assert setting in finetune, setting
    assert f"--subnet {work}" in finetune and "--finetune-from-model" in finetune
    generate = next(" ".join(c) for c in cmds[name] if _tool(c) == "fairseq-generate")
    assert "--beam 5" in generate and "--post-process sentencepiece" in generate and "checkpoint_best.pt" in generate
    assert "--required-batch-size-multiple 1" in generate  # else fairseq drops the last test batch (#5036)
    nas = {c[1]: " ".join(c) for c in cmds[name] if _tool(c) == "fairseq-nas" and c[1] != "rank"}
    assert "-n 2000" in nas["latency"] and "-n 300" in nas["collect"] and "--device cuda" in nas["latency"]
    ranks = [" ".join(c) for c in cmds[name] if _tool(c) == "fairseq-nas" and c[1] == "rank"]
    assert "--target valid_loss" in ranks[0] and "--prune --theta 1.15" in ranks[0]
    assert "--target drift_corrected_ms" in ranks[1]
    assert "pruned_space.yaml" in nas["search"] and "--latency-model" in nas["search"]
    if name == "iwslt14.sh":
        assert "--arch supernet_shrinknas_iwslt14" in supernet and "--latency-ms 120" in nas["search"]
        assert "--bpe-size 10000" in text and "--archive " in text and "--lang en" in nas["bleu"]
        assert "--src-len 23" in nas["latency"]
    else:
        assert "--arch supernet_ranknas_wmt14" in supernet and "--share-all-embeddings" in supernet
        assert "--share-all-embeddings" in finetune and "--lang de" in nas["bleu"]
        assert "--bpe-size 32000" in text and "--sample-train 1000" in text and "--src-len 30" in nas["latency"]


@pytest.mark.parametrize("name", RECIPES)
def test_printed_commands_are_accepted_by_the_real_parsers(dry_runs, name):
    _, _, cmds, by_line = dry_runs
    seen = set()
    for c in cmds[name]:
        if c[0] == "bash":  # the data-prep script: tested by test_prepare_archives.py
            continue
        r = by_line[shlex.join(c)]
        assert "error" not in r, (c, r)
        args = r["args"] if "skipped" not in r else {}
        if r["tool"] == "fairseq-nas":
            seen.add(r["sub"])
            assert r.get("skipped") or r["help_exit"] == 0, r
        elif r["tool"] == "fairseq-train" and args["arch"] != "nas_subnet":
            assert args["lr"] == [0.0005] and args["warmup_updates"] == 10000 and args["max_update"] == 50000
            assert args["max_tokens"] == 4096 and args["sampler"] == "dss" and args["dss_every_epochs"] == 10
            assert args["dss_times"] == 5 and args["distributed_world_size"] == 2
            assert args["ddp_backend"] == "legacy_ddp" and args["label_smoothing"] == 0.1
        elif r["tool"] == "fairseq-train":
            assert args["max_update"] == 30000 and args["finetune_from_model"] == args["subnet"]
            assert bool(args.get("share_all_embeddings")) is (name == "wmt14.sh")
        else:
            assert args["beam"] == 5 and args["gen_subset"] == "test" and args["required_batch_size_multiple"] == 1
    assert seen == {"latency", "collect", "rank", "search", "export", "bleu"}


def test_finished_stages_are_skipped_and_an_interrupted_search_resumes(tmp_path):
    work = tmp_path / "w"
    for marker in ("data/DONE", "supernet/DONE", "latency/DONE", "collect/DONE"):
        (work / marker).parent.mkdir(parents=True, exist_ok=True)
        (work / marker).write_text("x\n")
    (work / "search").mkdir()
    (work / "search" / "search.jsonl").write_text('{"generation": 0}\n')
    proc = _recipe("iwslt14.sh", work=work, GPUS=0, SAMPLER_ARGS="")
    lines = proc.stdout.splitlines()
    assert [line.split()[2].rstrip(":") for line in lines if line.startswith("# skip")] == [
        "data", "supernet", "latency", "collect"]
    cmds = _commands(proc.stdout)
    assert [_tool(c) for c in cmds][:2] == ["fairseq-nas", "fairseq-nas"]  # rank, latency model
    search = next(c for c in cmds if c[1:2] == ["search"])
    assert "--resume" in search and "--device" in search and search[search.index("--device") + 1] == "cpu"
    finetune = next(c for c in cmds if _tool(c) == "fairseq-train")
    assert "--cpu" in finetune and "--distributed-world-size" not in finetune
    assert not (work / "ranker").exists()


def test_launcher_and_no_dss(tmp_path):
    proc = _recipe("wmt14.sh", work=tmp_path / "w", GPUS=8, SAMPLER_ARGS="",
                   LAUNCHER="torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8", SUPERNET_EXTRA="--seed 3")
    supernet = next(c for c in _commands(proc.stdout) if "supernet_translation" in c)
    assert supernet[:7] == ["torchrun", "--nnodes", "2", "--node_rank", "0", "--nproc_per_node", "8"]
    assert "--distributed-world-size" not in supernet and "--sampler" not in supernet
    assert supernet[-2:] == ["--seed", "3"]


@pytest.mark.parametrize("name,args,variables,needle", [
    ("iwslt14.sh", ["--gpus", "x"], {}, "--gpus/GPUS"),
    ("iwslt14.sh", [], {"LATENCY_MS": "0"}, "LATENCY_MS"),
    ("iwslt14.sh", ["--device", "tpu"], {}, "--device/DEVICE"),
    ("iwslt14.sh", ["--archive", "/nonexistent/de-en.tgz"], {}, "--archive"),
    ("iwslt14.sh", ["--bogus"], {}, "unknown option"),
    ("wmt14.sh", ["--arch", "supernet_nope"], {}, "no shipped space"),
    ("wmt14.sh", ["--sample-train", "-3"], {}, "--sample-train"),
    ("wmt14.sh", [], {"SUPERNET_UPDATES": "many"}, "SUPERNET_UPDATES"),
])
def test_bad_input_is_one_line_error(tmp_path, name, args, variables, needle):
    proc = _recipe(name, *args, work=tmp_path / "w", check=False, **variables)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: ") and needle in lines[0], proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("name", RECIPES)
def test_help(name):
    proc = subprocess.run(["bash", str(REPO / "scripts" / name), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:")
    for word in ("--work", "--gpus", "--latency-ms", "--dry-run", "DRY_RUN", "SAMPLER_ARGS", "LAUNCHER"):
        assert word in proc.stdout, word


def test_baselines_run_the_claim_protocol(tmp_path):
    """--baselines: transformers inside the space trained from scratch, timed, one search per
    baseline at its measured latency less the margin, the found architecture from scratch and the
    found subnet fine-tuned, every trained model timed together, and the report."""
    proc = _recipe("iwslt14.sh", "--baselines", "240:6:3,320:6:6", work=tmp_path / "w", SCRATCH_UPDATES=40,
                   FINETUNE_UPDATES=10)
    stages = [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("# stage ")]
    per = ["search", "export", "scratch", "finetune", "evaluate"]
    names = ["transformer-240d-6x3", "transformer-320d-6x6"]
    assert stages == ["data", "supernet", "latency", "collect", "rank", "latency_model", "baselines",
                      "baseline_latency"] + [f"{s}:{n}" for n in names for s in per] + ["claim_latency", "report"]
    subprocess.run(["bash", "-n"], input=proc.stdout, text=True, check=True)  # still a runnable script
    cmds = [[a.replace("$limit", "50.0") for a in c] for c in _commands(proc.stdout)]
    trains = [c for c in cmds if _tool(c) == "fairseq-train"]
    base = [c for c in trains if "transformer" in c]
    assert len(base) == 2 and all("--max-update" in c and c[c.index("--max-update") + 1] == "40" for c in base)
    assert all("--encoder-normalize-before" in c and "--dropout" in c for c in base)
    scratch = [c for c in trains if "nas_subnet" in c and "--finetune-from-model" not in c]
    assert len(scratch) == 2 and all(c[c.index("--max-update") + 1] == "40" for c in scratch)
    searches = [c for c in cmds if c[1:2] == ["search"]]
    assert len(searches) == 2 and all(c[c.index("--latency-ms") + 1] == "50.0" for c in searches)
    lat = [c for c in cmds if c[1:2] == ["latency"] and "--checkpoints" in c]
    assert len(lat) == 2 and sum(a.endswith("checkpoint_best.pt") for a in lat[1]) == 6
    to_parse = [c for c in cmds if _tool(c) in ("fairseq-train", "fairseq-generate", "fairseq-nas")]
    parsed = subprocess.run([sys.executable, "-c", PARSE], input=json.dumps(to_parse), capture_output=True, text=True,
                            env=env(), cwd=REPO, timeout=300)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    results = json.loads(parsed.stdout[parsed.stdout.rindex("RESULTS") + len("RESULTS"):])
    assert all("error" not in r for r in results), [r for r in results if "error" in r]
    bad = _recipe("iwslt14.sh", "--baselines", "999:6:3", work=tmp_path / "w2", check=False)
    assert bad.returncode == 2 and "embed_dim 999 is not in space shrinknas_iwslt14" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    few = _recipe("iwslt14.sh", "--baselines", "240:6:3", work=tmp_path / "w3", check=False, SCRATCH_UPDATES=100,
                  FINETUNE_UPDATES=100)
    assert few.returncode == 2 and "must be fewer than SCRATCH_UPDATES" in few.stderr
