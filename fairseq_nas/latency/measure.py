"""The latency measurement protocol (HAT's, corrected; DESIGN.md section 8).

What one *run* times, on the standalone model of the subnet (random weights: latency
depends on the shapes, not the values; the vocabulary sizes are real):

- encoder: one source sentence of `src_len` random tokens (no padding), batch 1;
- decoder: beam search for one sentence with `beam` hypotheses: the encoder output is
  expanded to the beam, then `tgt_len` incremental steps (one token per step, cached keys,
  values and convolution windows); each step computes the output projection and
  log-softmax over the target vocabulary, picks the best `beam` continuations with a real
  top-k over beam x vocab (as fairseq's beam search), and reorders the incremental state
  and the encoder output by the chosen hypotheses. Padding and end-of-sentence are
  forbidden, so every run decodes exactly `tgt_len` tokens (no early stop).

The model runs in `eval()` mode under `torch.no_grad()`. `warmup` untimed runs come first,
then `runs` timed ones; the encoder and decoder are timed separately (CUDA events with a
synchronisation on GPU, `time.perf_counter` on CPU) and a run's total is their sum.
`latency_ms` is the trimmed mean of the totals: the fastest and slowest 10% dropped.
"""
from __future__ import annotations

import contextlib
import gc
import math
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional

import torch

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.latency.costs import count_flops, count_params
from fairseq_nas.latency.stats import summarize, trimmed_mean
from fairseq_nas.space import SearchSpace, Subnet

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
NSPECIAL = 4  # fairseq Dictionary: <s>, <pad>, </s>, <unk>
BOS_AS_EOS = 2  # fairseq starts decoding with </s>


@dataclass(frozen=True)
class Protocol:
    """Settings of one latency measurement (defaults: HAT's IWSLT protocol)."""

    src_len: int = 23
    tgt_len: Optional[int] = None  # None: = src_len
    beam: int = 5
    warmup: int = 10
    runs: int = 300
    trim: float = 0.1
    device: str = "cpu"
    threads: Optional[int] = 1  # CPU threads (torch.set_num_threads); None: leave torch's setting
    dtype: str = "float32"
    seed: int = 1  # the random source tokens

    @property
    def target_len(self) -> int:
        return self.src_len if self.tgt_len is None else self.tgt_len

    def check(self) -> None:
        """Raise FairseqNasError naming the first invalid setting."""
        for name, value, low in (("src_len", self.src_len, 1), ("tgt_len", self.target_len, 1),
                                 ("beam", self.beam, 1), ("runs", self.runs, 1), ("warmup", self.warmup, 0)):
            if value < low:
                raise FairseqNasError(f"--{name.replace('_', '-')}: expected an integer >= {low}, got {value}")
        if self.threads is not None and self.threads < 1:
            raise FairseqNasError(f"--threads: expected a positive integer, got {self.threads}")
        if self.dtype not in DTYPES:
            raise FairseqNasError(f"--dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not 0 <= self.trim < 0.5:
            raise FairseqNasError(f"trim: expected a fraction in [0, 0.5), got {self.trim}")
        check_device(self.device)


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


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Set torch's intra-op thread count for the block, then restore it."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


class _Timer:
    """Marks on a timeline: CUDA events (read after one synchronisation) or perf_counter."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def mark(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def elapsed_ms(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) if self.cuda else (b - a) * 1000.0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def beam_decode(model, encoder_out: dict, beam: int, steps: int, vocab: int, pad: int = 1, eos: int = BOS_AS_EOS,
                device: Optional[torch.device] = None) -> torch.Tensor:
    """`steps` incremental beam-search steps for one sentence (what the decoder timing covers);
    returns the hypotheses (beam x steps+1)."""
    device = device or next(model.parameters()).device
    decoder, encoder = model.decoder, model.encoder
    order = torch.zeros(beam, dtype=torch.long, device=device)
    encoder_out = encoder.reorder_encoder_out(encoder_out, order)  # 1 sentence -> beam copies
    tokens = torch.full((beam, steps + 1), eos, dtype=torch.long, device=device)
    scores = torch.full((beam,), -math.inf, device=device)
    scores[0] = 0.0  # all hypotheses start equal: expand only the first
    state: dict = {}
    for step in range(steps):
        logits, _ = decoder(tokens[:, :step + 1], encoder_out, incremental_state=state)
        lprobs = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        lprobs[:, pad] = -math.inf
        lprobs[:, eos] = -math.inf  # no early stop: every hypothesis runs `steps` tokens
        top, idx = (scores.unsqueeze(1) + lprobs).view(-1).topk(beam)
        order = torch.div(idx, vocab, rounding_mode="floor")
        scores = top
        tokens = tokens.index_select(0, order)
        tokens[:, step + 1] = idx % vocab
        if step + 1 < steps:
            decoder.reorder_incremental_state_scripting(state, order)
            encoder_out = encoder.reorder_encoder_out(encoder_out, order)
    return tokens


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while timing (as `timeit` does): its pauses land in
    random runs. Reference counting still frees the tensors of each run."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_model(model, protocol: Protocol) -> dict[str, list[float]]:
    """Per-run encoder and decoder milliseconds of `model` (any fairseq-nas encoder-decoder with its
    subnet set: the standalone model or a supernet) under `protocol`: {"encoder": [...], "decoder": [...]}.

    The model is moved to the protocol's device and dtype and put in eval mode."""
    protocol.check()
    device = torch.device(protocol.device)
    model = model.to(device=device, dtype=DTYPES[protocol.dtype]).eval()
    src_vocab, tgt_vocab = len(model.encoder.dictionary), len(model.decoder.dictionary)
    pad = model.decoder.dictionary.pad()
    gen = torch.Generator().manual_seed(protocol.seed)
    src = torch.randint(NSPECIAL, src_vocab, (1, protocol.src_len), generator=gen).to(device)
    src[0, -1] = BOS_AS_EOS  # a source sentence ends with </s>
    src_lengths = torch.tensor([protocol.src_len], device=device)
    timer = _Timer(device)
    enc_ms: list[float] = []
    dec_ms: list[float] = []
    with torch_threads(protocol.threads), torch.no_grad(), _no_gc():
        for i in range(protocol.warmup + protocol.runs):
            timer.sync()
            t0 = timer.mark()
            encoder_out = model.encoder(src, src_lengths)
            t1 = timer.mark()
            beam_decode(model, encoder_out, protocol.beam, protocol.target_len, tgt_vocab, pad, BOS_AS_EOS,
                         device)
            t2 = timer.mark()
            timer.sync()
            if i >= protocol.warmup:
                enc_ms.append(timer.elapsed_ms(t0, t1))
                dec_ms.append(timer.elapsed_ms(t1, t2))
    return {"encoder": enc_ms, "decoder": dec_ms}


def library_versions() -> dict[str, str]:
    try:
        import fairseq

        fairseq_version = getattr(fairseq, "__version__", "unknown")
    except ImportError:
        fairseq_version = "not installed"
    return {"torch": torch.__version__, "fairseq": fairseq_version}


def timing_row(times: dict[str, list[float]], protocol: Protocol) -> dict[str, Any]:
    """latency_ms and the encoder/decoder/total statistics of per-run timings."""
    totals = [e + d for e, d in zip(times["encoder"], times["decoder"])]
    return {
        "latency_ms": trimmed_mean(totals, protocol.trim),
        "encoder_ms": summarize(times["encoder"], protocol.trim),
        "decoder_ms": summarize(times["decoder"], protocol.trim),
        "total_ms": summarize(totals, protocol.trim),
    }


def measure(subnet: Subnet, space: SearchSpace, src_vocab: int, tgt_vocab: int,
            protocol: Protocol = Protocol(), share_all_embeddings: bool = False,
            untie_decoder_output: bool = False) -> dict[str, Any]:
    """Measure the subnet's standalone model; one result row (plain JSON values).

    Row: subnet, latency_ms (trimmed mean of encoder + decoder per run), encoder_ms,
    decoder_ms and total_ms ({mean (trimmed), median, std (of the trimmed runs), min}), runs,
    warmup, trim, params, flops (of the timed computation, see `costs.count_flops`, beam
    included), device, device_name, threads, dtype, torch, fairseq, src_len, tgt_len, beam,
    src_vocab, tgt_vocab.
    """
    protocol.check()
    model = build_standalone(subnet, space, src_vocab, tgt_vocab, share_all_embeddings, untie_decoder_output)
    times = time_model(model, protocol)
    device = protocol.device
    threads = protocol.threads if protocol.threads is not None else torch.get_num_threads()
    row: dict[str, Any] = {"subnet": subnet.to_dict()}
    row.update(timing_row(times, protocol))
    row.update(
        runs=protocol.runs, warmup=protocol.warmup, trim=protocol.trim,
        params=count_params(subnet, space, src_vocab, tgt_vocab, share_all_embeddings, untie_decoder_output),
        flops=count_flops(subnet, space, protocol.src_len, protocol.target_len, tgt_vocab, protocol.beam),
        device=device.split(":", 1)[0], device_name=device_name(device), threads=threads, dtype=protocol.dtype,
        **library_versions(),
        src_len=protocol.src_len, tgt_len=protocol.target_len, beam=protocol.beam,
        src_vocab=src_vocab, tgt_vocab=tgt_vocab,
    )
    return row


def protocol_dict(protocol: Protocol) -> dict[str, Any]:
    d = asdict(protocol)
    d["tgt_len"] = protocol.target_len
    return d
