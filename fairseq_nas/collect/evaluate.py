"""Inherited-weight evaluation of subnets: the supernet with a subnet set, on a fixed validation subset.

The subset is the first sentences of a split, in file order (deterministic): the first
``max_sentences``, or the longest prefix whose target tokens sum to at most ``max_tokens``. Its
batches are built once and reused for every subnet, so all subnets see exactly the same data.
The loss is fairseq's ``label_smoothed_cross_entropy`` per target token in base 2, i.e. what
fairseq-train logs as ``valid_loss`` / ``valid_nll_loss`` (the smoothing of the checkpoint's
criterion unless overridden).

Imports torch and fairseq: use it from the CLI's ``run()`` or after ``fairseq_nas.register()``.
"""
from __future__ import annotations

import logging
import math
from argparse import Namespace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from fairseq_nas.errors import FairseqNasError

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def find_flops_counter() -> Optional[Callable[..., Any]]:
    """``fairseq_nas.latency.costs.count_flops`` when that module exists, else None."""
    try:
        from fairseq_nas.latency.costs import count_flops  # type: ignore[import-not-found]
    except ImportError:
        return None
    return count_flops


class SubnetEvaluator:
    """Loads a supernet checkpoint with its task on ``data`` and scores subnets with inherited weights.

    ``loss(subnet)`` -> {"valid_loss", "valid_nll_loss", "n_sentences", "n_tokens"};
    ``params(subnet)`` -> parameters of the exported standalone subnet;
    ``flops(subnet)`` -> FLOPs of one ``flops_len``-token sentence (``fairseq_nas.latency.costs``) or None;
    ``bleu(subnet)`` -> corpus BLEU (sacrebleu, tokenize none) of beam/greedy decoding of the subset.
    """

    def __init__(
        self,
        checkpoint: PathLike,
        data: PathLike,
        subset: str = "valid",
        max_sentences: Optional[int] = None,
        max_tokens: Optional[int] = None,
        batch_tokens: int = 4096,
        label_smoothing: Optional[float] = None,
        device: Optional[str] = None,
        flops_len: int = 23,
    ):
        import fairseq_nas

        fairseq_nas.register()
        from fairseq import checkpoint_utils

        from fairseq_nas.models.export import load_supernet_checkpoint

        data = Path(data)
        if not data.is_dir():
            raise FairseqNasError(f"{data}: no such data-bin directory (fairseq-preprocess output)")
        load_supernet_checkpoint(checkpoint)  # a one-line error for a file that is not a supernet checkpoint
        try:
            models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
                [str(checkpoint)], arg_overrides={"data": str(data)})
        except FairseqNasError as e:  # e.g. the space: name the checkpoint unless the message does
            if str(e).startswith(str(checkpoint)):
                raise
            raise FairseqNasError(f"{checkpoint}: {e}") from None
        except (OSError, RuntimeError, ValueError, KeyError, AssertionError) as e:
            raise FairseqNasError(f"{checkpoint}: cannot load with data {data}: {_one_line(e)}") from None
        self.model = models[0]
        if not hasattr(self.model, "set_subnet"):
            raise FairseqNasError(f"{checkpoint}: not a supernet checkpoint ({type(self.model).__name__})")
        self.cfg, self.task = cfg, task
        self.space = self.model.space
        self.space_yaml = self.space.to_yaml()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        crit = cfg.criterion if cfg.criterion is not None else {}
        ls = crit.get("label_smoothing", 0.0) if hasattr(crit, "get") else getattr(crit, "label_smoothing", 0.0)
        self.label_smoothing = float(label_smoothing if label_smoothing is not None else (ls or 0.0))
        self.subset = subset
        try:
            task.load_dataset(subset)
        except (FileNotFoundError, OSError) as e:
            raise FairseqNasError(f"{data}: subset {subset!r}: {_one_line(e)}") from None
        self.dataset = task.dataset(subset)
        self.indices = self._choose(max_sentences, max_tokens)
        self.batches = self._batches(self.indices, batch_tokens)
        self.n_sentences = len(self.indices)
        self.n_tokens = int(sum(int(b["ntokens"]) for b in self.batches))
        self._flops = find_flops_counter()
        self.flops_len = int(flops_len)

    # -- the fixed subset ------------------------------------------------------------------------
    def _choose(self, max_sentences: Optional[int], max_tokens: Optional[int]) -> list[int]:
        n = len(self.dataset)
        if n == 0:
            raise FairseqNasError(f"subset {self.subset!r} is empty")
        if max_tokens is not None:
            sizes = self.dataset.tgt_sizes if self.dataset.tgt_sizes is not None else self.dataset.src_sizes
            total, out = 0, []
            for i in range(n):
                total += int(sizes[i])
                if out and total > max_tokens:
                    break
                out.append(i)
            return out
        m = n if max_sentences is None else min(int(max_sentences), n)
        return list(range(m))

    def _batches(self, indices: list[int], batch_tokens: int) -> list[dict]:
        from fairseq import utils

        ds = self.dataset
        src = ds.src_sizes
        tgt = ds.tgt_sizes if ds.tgt_sizes is not None else src
        order = sorted(indices, key=lambda i: (int(src[i]), int(tgt[i]), i))
        batches, cur, longest = [], [], 0
        for i in order:
            size = max(int(src[i]), int(tgt[i]))
            if cur and (max(longest, size) * (len(cur) + 1) > batch_tokens):
                batches.append(cur)
                cur, longest = [], 0
            cur.append(i)
            longest = max(longest, size)
        if cur:
            batches.append(cur)
        out = []
        for b in batches:
            sample = ds.collater([ds[i] for i in b])
            out.append(utils.move_to_cuda(sample, device=self.device) if self.device.type == "cuda" else sample)
        return out

    # -- metrics ---------------------------------------------------------------------------------
    def set_subnet(self, subnet) -> None:
        self.model.set_subnet(subnet)

    @torch.no_grad()
    def loss(self, subnet) -> dict[str, Any]:
        """Label-smoothed CE and NLL per target token (base 2) of ``subnet`` on the fixed subset."""
        from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

        self.set_subnet(subnet)
        self.model.eval()
        pad = self.task.target_dictionary.pad()
        loss_sum = nll_sum = 0.0
        ntokens = 0
        for sample in self.batches:
            net_output = self.model(**sample["net_input"])
            lprobs = self.model.get_normalized_probs(net_output, log_probs=True)
            target = self.model.get_targets(sample, net_output)
            lprobs = lprobs.view(-1, lprobs.size(-1)).float()
            loss, nll = label_smoothed_nll_loss(lprobs, target.view(-1), self.label_smoothing, ignore_index=pad)
            loss_sum += float(loss)
            nll_sum += float(nll)
            ntokens += int(sample["ntokens"])
        denom = max(ntokens, 1) * math.log(2)
        return {"valid_loss": loss_sum / denom, "valid_nll_loss": nll_sum / denom,
                "n_sentences": self.n_sentences, "n_tokens": ntokens}

    def export(self, subnet):
        """The standalone nas_subnet model of ``subnet`` with inherited weights."""
        from fairseq_nas.models.export import export_model

        return export_model(self.model, subnet)

    def params(self, subnet) -> int:
        """Parameters of the exported standalone subnet (`latency.costs.count_params`: exact, no model built)."""
        from fairseq_nas.sampling.validator import subnet_params

        return subnet_params(self.model, subnet)

    @property
    def has_flops(self) -> bool:
        return self._flops is not None

    def flops(self, subnet) -> Optional[int]:
        """FLOPs of translating one sentence of ``flops_len`` tokens into ``flops_len`` tokens with
        `latency`'s beam (5), output projection included (``fairseq_nas.latency.costs.count_flops``): the
        number `fairseq-nas latency` reports with its default protocol. None without that module."""
        if self._flops is None:
            return None
        from fairseq_nas.latency.measure import Protocol

        return int(self._flops(subnet, self.space, src_len=self.flops_len, tgt_len=self.flops_len,
                               tgt_vocab=len(self.task.target_dictionary), beam=Protocol().beam))

    @torch.no_grad()
    def bleu(self, subnet, beam: int = 1, max_len_a: float = 1.2, max_len_b: int = 10,
             post_process: Optional[str] = "auto") -> float:
        """Corpus BLEU of decoding the subset with ``subnet`` (sacrebleu, tokenize none, i.e. on
        the space-separated tokens after removing BPE). Beam 1 = greedy."""
        import sacrebleu

        self.set_subnet(subnet)
        self.model.eval()
        tgt_dict = self.task.target_dictionary
        if post_process == "auto":
            post_process = "sentencepiece" if any(s.startswith("\u2581") for s in tgt_dict.symbols[:200]) else None
        gen_args = Namespace(beam=beam, max_len_a=max_len_a, max_len_b=max_len_b, min_len=1, lenpen=1.0,
                             unkpen=0.0, temperature=1.0, no_repeat_ngram_size=0)
        generator = self.task.build_generator([self.model], gen_args)
        hyps, refs = [], []
        for sample in self.batches:
            out = self.task.inference_step(generator, [self.model], sample)
            for j in range(len(out)):
                hyp = out[j][0]["tokens"]
                ref = sample["target"][j]
                ref = ref[ref.ne(tgt_dict.pad())]
                hyps.append(tgt_dict.string(hyp.int().cpu(), post_process, escape_unk=True))
                refs.append(tgt_dict.string(ref.int().cpu(), post_process))
        return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score)
