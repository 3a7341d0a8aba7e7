"""The latency measurement protocol (HAT's, corrected; DESIGN.md section 8).

What one *run* times, on the standalone model of the subnet (random weights: latency
depends on the shapes, not the values; the vocabulary sizes are real): the encoder on one
source sentence of `src_len` tokens, then beam search with `beam` hypotheses for exactly
`tgt_len` steps, by fairseq's SequenceGenerator (default) or a bare loop; see
`fairseq_nas.latency.timing`.

How runs are scheduled (`protocol`):

- "rounds" (default): the subnets of a list are measured together, in `rounds` rounds; each
  round times every subnet (in a shuffled order) `round_warmup` untimed runs, then its share
  of the `runs` timed runs (`fairseq_nas.latency.rounds`);
- "block": HAT's, one subnet after the other, all its runs in one block.

Either way every model first gets `warmup` untimed runs. The model runs in `eval()` mode under
`torch.no_grad()`, with the cyclic garbage collector off. A row's `latency_ms` is the
`statistic` ("median" default, "trimmed_mean": the fastest and slowest `trim` dropped, HAT's;
"min") of its runs' totals on the `clock` ("wall" default, or "cpu"); the row names both
(`latency_stat`, `latency_clock`) and keeps the median, trimmed mean, IQR and CV of each part.
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.latency.costs import count_flops, count_params
from fairseq_nas.latency.rounds import effective_rounds, run_rounds, runs_in_round
from fairseq_nas.latency.stats import STATISTICS, statistic, summarize
from fairseq_nas.latency.timing import (  # noqa: F401  (re-exported: the protocol's building blocks)
    BOS_AS_EOS,
    DECODER_LOOPS,
    NSPECIAL,
    SubnetTimer,
    beam_decode,
    no_gc,
    torch_threads,
)
from fairseq_nas.space import SearchSpace, Subnet

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROTOCOLS = ("rounds", "block")
CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class Protocol:
    """Settings of one latency measurement (defaults: HAT's IWSLT protocol, interleaved)."""

    src_len: int = 23
    tgt_len: Optional[int] = None  # None: = src_len
    beam: int = 5
    warmup: int = 10
    runs: int = 300
    trim: float = 0.1
    device: str = "cpu"
    threads: Optional[int] = 1  # CPU threads (torch.set_num_threads); None: leave torch's setting
    dtype: str = "float32"
    seed: int = 1  # the random source tokens, and the rounds' order
    protocol: str = "rounds"
    rounds: int = 10
    round_warmup: int = 1
    decoder_loop: str = "generator"
    statistic: str = "median"
    clock: str = "wall"

    @property
    def target_len(self) -> int:
        return self.src_len if self.tgt_len is None else self.tgt_len

    @property
    def n_rounds(self) -> int:
        """Rounds actually made: 1 for the block protocol, at most one per run."""
        return 1 if self.protocol == "block" else effective_rounds(self.runs, self.rounds)

    def check(self) -> None:
        """Raise FairseqNasError naming the first invalid setting."""
        for name, value, low in (("src_len", self.src_len, 1), ("tgt_len", self.target_len, 1),
                                 ("beam", self.beam, 1), ("runs", self.runs, 1), ("warmup", self.warmup, 0),
                                 ("rounds", self.rounds, 1), ("round_warmup", self.round_warmup, 0)):
            if value < low:
                raise FairseqNasError(f"--{name.replace('_', '-')}: expected an integer >= {low}, got {value}")
        if self.threads is not None and self.threads < 1:
            raise FairseqNasError(f"--threads: expected a positive integer, got {self.threads}")
        for flag, value, valid in (("--dtype", self.dtype, DTYPES), ("--protocol", self.protocol, PROTOCOLS),
                                   ("--decoder-loop", self.decoder_loop, DECODER_LOOPS),
                                   ("--statistic", self.statistic, STATISTICS), ("--clock", self.clock, CLOCKS)):
            if value not in valid:
                raise FairseqNasError(f"{flag}: {value!r} is not one of {', '.join(valid)}")
        if not 0 <= self.trim < 0.5:
            raise FairseqNasError(f"trim: expected a fraction in [0, 0.5), got {self.trim}")
        check_device(self.device)

    def settings(self) -> dict[str, Any]:
        """The fields a row records and a resumed run must share (see store.PROTOCOL_FIELDS)."""
        return {"device": self.device.split(":", 1)[0], "dtype": self.dtype,
                "threads": self.threads if self.threads is not None else torch.get_num_threads(),
                "src_len": self.src_len, "tgt_len": self.target_len, "beam": self.beam, "runs": self.runs,
                "protocol": self.protocol, "rounds": self.n_rounds, "round_warmup": self.round_warmup,
                "decoder_loop": self.decoder_loop, "latency_stat": self.statistic, "latency_clock": self.clock,
                "conv_kernels": conv_kernels(self.device, self.dtype)}


def conv_kernels(device: str, dtype: str) -> str:
    """Which convolution code a measurement runs: the native CPU kernels (float32 on the CPU, where
    they built) or the pure-PyTorch paths. Rows measured with one do not mix with the other's."""
    from fairseq_nas.modules import native

    if device.split(":", 1)[0] == "cpu" and DTYPES.get(dtype) == torch.float32 and native.conv_ops() is not None:
        return "native"
    return "pytorch"


def check_device(device: str) -> None:
    """Raise FairseqNasError if `device` is not usable here."""
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        return
    if kind != "cuda":
        raise FairseqNasError(f"--device: {device!r} is not supported; use cpu or cuda")
    if not torch.cuda.is_available():
        raise FairseqNasError("--device cuda: no CUDA device is available here (torch "
                              f"{torch.__version__}, torch.cuda.is_available() is False); use --device cpu")


def device_name(device: str) -> str:
    """A human-readable name of the device (GPU model, or the CPU model from /proc/cpuinfo)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_standalone(subnet: Subnet, space: SearchSpace, src_vocab: int, tgt_vocab: int,
                     share_all_embeddings: bool = False, untie_decoder_output: bool = False):
    """The subnet's standalone `nas_subnet` model with random weights, in eval mode, on the CPU."""
    import fairseq_nas

    fairseq_nas.register()
    from fairseq_nas.models.export import _SizedDictionary, build_subnet_model, subnet_config

    for name, v in (("source", src_vocab), ("target", tgt_vocab)):
        if v <= NSPECIAL:
            raise FairseqNasError(f"{name} vocabulary of {v} symbols: expected more than the {NSPECIAL} specials")
    src = _SizedDictionary(src_vocab, 1)
    tgt = src if share_all_embeddings and src_vocab == tgt_vocab else _SizedDictionary(tgt_vocab, 1)
    cfg = subnet_config({"share_all_embeddings": share_all_embeddings, "untie_decoder_output": untie_decoder_output,
                         "dropout": 0.0}, subnet, space.to_yaml())
    return build_subnet_model(cfg, src, tgt).eval()


def prepare(model, protocol: Protocol) -> SubnetTimer:
    """`model` on the protocol's device and dtype, in eval mode, ready to time."""
    model = model.to(device=torch.device(protocol.device), dtype=DTYPES[protocol.dtype]).eval()
    return SubnetTimer(model, protocol.src_len, protocol.target_len, protocol.beam, protocol.decoder_loop,
                       protocol.threads, protocol.seed)


def time_model(model, protocol: Protocol) -> dict[str, list[float]]:
    """Per-run encoder, decoder and CPU milliseconds of `model` (any fairseq-nas encoder-decoder with
    its subnet set: the standalone model or a supernet), all runs in one block after the warm-up:
    {"encoder": [...], "decoder": [...], "cpu": [...]}. The model is moved to the protocol's device
    and dtype and put in eval mode."""
    protocol.check()
    timer = prepare(model, protocol)
    timer.runs(protocol.warmup)
    return timer.runs(protocol.runs)


def library_versions() -> dict[str, str]:
    try:
        import fairseq

        fairseq_version = getattr(fairseq, "__version__", "unknown")
    except ImportError:
        fairseq_version = "not installed"
    return {"torch": torch.__version__, "fairseq": fairseq_version}


def _totals(times: dict[str, list[float]]) -> list[float]:
    return [e + d for e, d in zip(times["encoder"], times["decoder"])]


def timing_row(times: dict[str, list[float]], protocol: Protocol,
               rounds: Optional[Sequence[dict[str, list[float]]]] = None) -> dict[str, Any]:
    """latency_ms (the protocol's statistic of the per-run totals on its clock, both named) and the
    statistics of the encoder, decoder, total (wall) and CPU milliseconds; with `rounds`, also the
    median total of each round (`round_ms`: how far the machine drifted meanwhile)."""
    totals = _totals(times)
    figure = totals if protocol.clock == "wall" else times["cpu"]
    row: dict[str, Any] = {
        "latency_ms": statistic(figure, protocol.statistic, protocol.trim),
        "latency_stat": protocol.statistic, "latency_clock": protocol.clock,
        "encoder_ms": summarize(times["encoder"], protocol.trim),
        "decoder_ms": summarize(times["decoder"], protocol.trim),
        "total_ms": summarize(totals, protocol.trim),
        "cpu_ms": summarize(times["cpu"], protocol.trim),
    }
    if rounds is not None and len(rounds) > 1:
        row["round_ms"] = [round(statistic(_totals(r), "median"), 4) for r in rounds]
    return row


def _merge(parts: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    return {k: [v for p in parts for v in p[k]] for k in ("encoder", "decoder", "cpu")}


def _load_summary(loads: Sequence[Optional[dict[str, Any]]]) -> Optional[dict[str, Any]]:
    seen = [x["busy_by_others"] for x in loads if x and x.get("busy_by_others") is not None]
    if not seen:
        return None
    return {"busy_by_others_mean": round(sum(seen) / len(seen), 3), "busy_by_others_max": round(max(seen), 3)}


def row_fields(subnet: Subnet, space: SearchSpace, src_vocab: int, tgt_vocab: int, protocol: Protocol,
               share_all_embeddings: bool = False, untie_decoder_output: bool = False) -> dict[str, Any]:
    """Everything of a row but its timings: the settings, params, FLOPs, device and versions."""
    return dict(
        runs=protocol.runs, warmup=protocol.warmup, trim=protocol.trim,
        params=count_params(subnet, space, src_vocab, tgt_vocab, share_all_embeddings, untie_decoder_output),
        flops=count_flops(subnet, space, protocol.src_len, protocol.target_len, tgt_vocab, protocol.beam),
        **{k: v for k, v in protocol.settings().items() if k != "runs"},
        device_name=device_name(protocol.device), **library_versions(),
        src_vocab=src_vocab, tgt_vocab=tgt_vocab,
    )


def finish_row(subnet: Optional[Subnet], rounds: Sequence[dict[str, Any]], fields: dict[str, Any],
               protocol: Protocol) -> dict[str, Any]:
    """A result row from a subnet's rounds (each {"encoder", "decoder", "cpu", "load"?}); a model
    that is not a subnet (`subnet` None, e.g. a trained fairseq `transformer`) gets no "subnet"."""
    row: dict[str, Any] = {} if subnet is None else {"subnet": subnet.to_dict()}
    row.update(timing_row(_merge(rounds), protocol, rounds if protocol.protocol == "rounds" else None))
    row.update(fields)
    row["load"] = _load_summary([r.get("load") for r in rounds])
    return row


OnRound = Callable[[Any, int, dict[str, Any]], None]
OnDone = Callable[[Any, dict[str, Any]], None]


def measure_many(items: Sequence[tuple[Any, Subnet]], space: SearchSpace, src_vocab: int, tgt_vocab: int,
                 protocol: Protocol = Protocol(), share_all_embeddings: bool = False,
                 untie_decoder_output: bool = False, prior: Optional[dict[Any, list[dict[str, Any]]]] = None,
                 on_round: Optional[OnRound] = None, on_done: Optional[OnDone] = None,
                 progress: Optional[Callable[[], None]] = None, meter=None,
                 build_model: Optional[Callable[[Any], Any]] = None,
                 fields_of: Optional[Callable[[Any], dict[str, Any]]] = None) -> dict[Any, dict[str, Any]]:
    """Measure (key, subnet) items under `protocol`; {key: row}.

    By default each subnet's standalone model (random weights) is built; `build_model(key)` and
    `fields_of(key)` replace how a key's model is built and what its row records besides the
    timings (`measure_models` uses them for trained checkpoints; the subnet is then None).

    Rounds protocol: every model is built and warmed up, then `run_rounds` interleaves them.
    `prior[key]`: rounds done before (read back after a kill; their entries as `on_round` got
    them), so only the rest are timed. `on_round(key, r, entry)` gets each round as it ends
    (entry: {"encoder", "decoder", "cpu": the round's runs, "load"}), `on_done(key, row)` each row
    as its last round ends (in `items` order within a round), `progress()` ticks per timed round.
    `meter` (a host.LoadMeter): the load other processes put on the machine, per round.
    Block protocol: each subnet in turn, warm-up and all runs; one "round" per subnet."""
    protocol.check()
    prior = prior or {}
    rows: dict[Any, dict[str, Any]] = {}
    subnets = dict(items)
    keys = [k for k, _ in items]
    n_rounds = protocol.n_rounds

    def done(key: Any) -> None:
        s = subnets[key]
        fields = (fields_of(key) if fields_of is not None else
                  row_fields(s, space, src_vocab, tgt_vocab, protocol, share_all_embeddings, untie_decoder_output))
        rows[key] = finish_row(s, list(prior.get(key, [])) + got[key], fields, protocol)
        timers.pop(key, None)  # free the model
        if on_done is not None:
            on_done(key, rows[key])

    def time_round(key: Any, r: int) -> dict[str, Any]:
        timer = timers[key]
        n = protocol.runs if protocol.protocol == "block" else runs_in_round(protocol.runs, n_rounds, r)
        if protocol.protocol == "block":
            timer.runs(protocol.warmup)
        elif protocol.round_warmup:
            timer.runs(protocol.round_warmup)
        a = meter.snapshot() if meter is not None else None
        entry: dict[str, Any] = dict(timer.runs(n))
        if meter is not None:
            busy = meter.busy_by_others(a, meter.snapshot())
            entry["load"] = {"busy_by_others": None if busy is None else round(busy, 3)}
        got[key].append(entry)
        if on_round is not None:
            on_round(key, r, entry)
        if progress is not None:
            progress()
        return entry

    got: dict[Any, list[dict[str, Any]]] = {k: [] for k in keys}
    timers: dict[Any, SubnetTimer] = {}
    complete = [k for k in keys if len(prior.get(k, [])) >= n_rounds]
    pending = [k for k in keys if k not in complete]
    for k in complete:  # all rounds done before a kill, the row not yet written
        done(k)

    def build(key: Any) -> SubnetTimer:
        if build_model is not None:
            return prepare(build_model(key), protocol)
        model = build_standalone(subnets[key], space, src_vocab, tgt_vocab, share_all_embeddings,
                                 untie_decoder_output)
        return prepare(model, protocol)

    if protocol.protocol == "block":
        for k in pending:
            timers[k] = build(k)
            time_round(k, 0)
            done(k)
        return rows
    with no_gc():  # one collection for all warm-ups and rounds, not one per (subnet, round): see timing.no_gc
        for k in pending:
            timers[k] = build(k)
            timers[k].runs(protocol.warmup)
        run_rounds(pending, time_round, n_rounds, protocol.seed, {k: len(prior.get(k, [])) for k in pending},
                   on_round_end=lambda r, finished: [done(k) for k in finished])
    return rows


def measure(subnet: Subnet, space: SearchSpace, src_vocab: int, tgt_vocab: int,
            protocol: Protocol = Protocol(), share_all_embeddings: bool = False,
            untie_decoder_output: bool = False) -> dict[str, Any]:
    """Measure one subnet's standalone model on its own; one result row (plain JSON values).

    Row: subnet, latency_ms (with latency_stat and latency_clock), encoder_ms, decoder_ms,
    total_ms and cpu_ms (see `stats.summarize`), round_ms (rounds protocol), load, runs, warmup,
    trim, params, flops (of the timed computation, see `costs.count_flops`, beam included),
    device, device_name, threads, dtype, protocol, rounds, round_warmup, decoder_loop, torch,
    fairseq, src_len, tgt_len, beam, src_vocab, tgt_vocab. Rounds of one subnet alone are just
    its runs in a few blocks with a warm-up run between."""
    return measure_many([(0, subnet)], space, src_vocab, tgt_vocab, protocol, share_all_embeddings,
                        untie_decoder_output)[0]


def protocol_dict(protocol: Protocol) -> dict[str, Any]:
    d = asdict(protocol)
    d["tgt_len"] = protocol.target_len
    return d

