"""Timing one model: the decoder loops, the clocks, and `SubnetTimer`, which runs one model
the protocol's way a given number of times.

One run: the encoder on one source sentence of `src_len` random tokens (batch 1, no padding),
then beam search with `beam` hypotheses for exactly `tgt_len` steps (the last one </s>), by

- "generator" (default): fairseq's `SequenceGenerator`, what fairseq-generate runs (see
  `fairseq_nas.latency.generator` for how its length is pinned);
- "bare": this package's minimal loop (`beam_decode`): the decoder step, log-softmax, a real
  top-k over beam x vocab and the cache reordering, nothing else.

Both decode the same tokens for the same model and input (tests/test_latency_generator.py).
Per run the timer records wall milliseconds of the encoder and the decoder (CUDA events with
one synchronisation per run on GPU, `time.perf_counter` on CPU) and the CPU milliseconds of
the whole run (`time.thread_time` with one thread: only the measuring thread's work, not the
time other processes took the core from it; `time.process_time` with more threads).
"""
from __future__ import annotations

import contextlib
import gc
import math
import time
from typing import Any, Callable, Iterator, Optional

import torch

from fairseq_nas.latency.generator import generate, generator_sample, make_generator

NSPECIAL = 4  # fairseq Dictionary: <s>, <pad>, </s>, <unk>
BOS_AS_EOS = 2  # fairseq starts decoding with </s>
DECODER_LOOPS = ("generator", "bare")


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


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while timing (as `timeit` does): its pauses land in
    random runs. Reference counting still frees the tensors of each run. Only the outermost
    block collects first: a full collection with a few dozen models in memory takes ~0.3 s,
    and the rounds protocol enters a block twice per subnet and round (measure_many wraps all
    its rounds in one block, so they pay it once)."""
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.collect()
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
                device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps` incremental beam-search steps for one sentence, as fairseq's SequenceGenerator
    makes them at a pinned length: </s> and padding forbidden until the last step, which must
    be </s>. Returns (hypotheses beam x steps+1, starting with </s> as BOS; best first, their
    cumulative log-probabilities)."""
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
        if step + 1 < steps:
            lprobs[:, eos] = -math.inf  # no early stop
        else:  # the last step ends every hypothesis, as fairseq does at max_len
            lprobs[:, :eos] = -math.inf
            lprobs[:, eos + 1:] = -math.inf
        top, idx = (scores.unsqueeze(1) + lprobs).view(-1).topk(beam)
        order = torch.div(idx, vocab, rounding_mode="floor")
        scores = top
        tokens = tokens.index_select(0, order)
        tokens[:, step + 1] = idx % vocab
        if step + 1 < steps:
            decoder.reorder_incremental_state_scripting(state, order)
            encoder_out = encoder.reorder_encoder_out(encoder_out, order)
    return tokens, scores


def cpu_clock(threads: Optional[int]) -> Callable[[], float]:
    """The CPU clock of a run: the thread's own with one torch thread, the process's otherwise."""
    return time.thread_time if threads == 1 else time.process_time


class SubnetTimer:
    """A model (already on its device, in eval mode) with its fixed input, timed run by run.

    `runs(n)` -> {"encoder": [...], "decoder": [...], "cpu": [...]} milliseconds, n runs."""

    def __init__(self, model, src_len: int, tgt_len: int, beam: int, decoder_loop: str = "generator",
                 threads: Optional[int] = 1, seed: int = 1):
        if decoder_loop not in DECODER_LOOPS:
            raise ValueError(f"decoder_loop: expected one of {', '.join(DECODER_LOOPS)}, got {decoder_loop!r}")
        self.model = model
        self.device = next(model.parameters()).device
        self.beam, self.tgt_len, self.decoder_loop, self.threads = beam, tgt_len, decoder_loop, threads
        self.vocab = len(model.decoder.dictionary)
        self.pad = model.decoder.dictionary.pad()
        gen = torch.Generator().manual_seed(seed)
        src = torch.randint(NSPECIAL, len(model.encoder.dictionary), (1, src_len), generator=gen)
        src[0, -1] = BOS_AS_EOS  # a source sentence ends with </s>
        self.src = src.to(self.device)
        self.src_lengths = torch.tensor([src_len], device=self.device)
        self.timer = _Timer(self.device)
        self.cpu = cpu_clock(threads)
        self.generator = make_generator(model, beam, tgt_len) if decoder_loop == "generator" else None
        self.sample = generator_sample(self.src, self.src_lengths)

    # one run ------------------------------------------------------------------------------------
    def _run_bare(self) -> tuple[Any, Any, Any, torch.Tensor]:
        t0 = self.timer.mark()
        encoder_out = self.model.encoder(self.src, self.src_lengths)
        t1 = self.timer.mark()
        tokens, _ = beam_decode(self.model, encoder_out, self.beam, self.tgt_len, self.vocab, self.pad,
                                BOS_AS_EOS, self.device)
        return t0, t1, self.timer.mark(), tokens[0, 1:]

    def _run_generator(self) -> tuple[Any, Any, Any, torch.Tensor]:
        encoder = self.model.encoder
        forward = encoder.forward
        own = encoder.__dict__.get("forward")  # an instance attribute already there (a test's wrapper)
        marks: list[Any] = []

        def timed_forward(*args: Any, **kwargs: Any) -> Any:  # the encoder's end: where decoding starts
            out = forward(*args, **kwargs)
            marks.append(self.timer.mark())
            return out

        encoder.forward = timed_forward  # SequenceGenerator calls encoder.forward directly, not hooks
        try:
            t0 = self.timer.mark()
            hypos = generate(self.generator, self.model, self.sample)
            t2 = self.timer.mark()
        finally:
            if own is None:
                del encoder.forward
            else:
                encoder.forward = own
        return t0, marks[0], t2, hypos[0]["tokens"]

    def decode(self) -> torch.Tensor:
        """The best hypothesis's tokens (ending with </s>) of one run."""
        with torch_threads(self.threads), torch.no_grad():
            return (self._run_generator() if self.generator is not None else self._run_bare())[3]

    def runs(self, n: int) -> dict[str, list[float]]:
        """n timed runs; warm-up runs are runs whose times are thrown away."""
        enc: list[float] = []
        dec: list[float] = []
        cpu: list[float] = []
        run = self._run_generator if self.generator is not None else self._run_bare
        with torch_threads(self.threads), torch.no_grad(), no_gc():
            for _ in range(n):
                self.timer.sync()
                c0 = self.cpu()
                t0, t1, t2, _ = run()
                self.timer.sync()
                c1 = self.cpu()
                enc.append(self.timer.elapsed_ms(t0, t1))
                dec.append(self.timer.elapsed_ms(t1, t2))
                cpu.append((c1 - c0) * 1000.0)
        return {"encoder": enc, "decoder": dec, "cpu": cpu}
