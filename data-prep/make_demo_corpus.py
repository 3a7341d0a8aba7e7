#!/usr/bin/env python3
"""Generate the synthetic parallel corpus of the fairseq-nas demo (stdlib only).

Two invented languages, ``src`` and ``tgt``, translate each other word by word
(every source token has exactly one target token, so a pair has equal lengths),
but the *order* and the *inflection* of the target depend on structure that a
model has to learn.  The lexicon is fixed (built from a constant seed, so it is
the same for every corpus); ``--seed`` only chooses the sentences.  The same
arguments give byte-identical files.

Grammar (``?`` optional, ``*`` repeated, ``|`` choice)::

    sentence    -> clause (conj clause)? "."
    clause      -> np mod? neg? verb np pp? adv?                (transitive verb)
                 | np mod? neg? verb adv?                       (intransitive verb)
    np          -> det adj{0,2} noun
    mod         -> pp | pp pp | rc                              (modifies the subject)
    pp          -> prep np
    rc          -> rel neg? verb np                             (subject relative: "that saw the cat")
                 | rel np neg? verb                             (object relative: "that the cats saw")

Source language (English-like): SVO, adjectives before the noun, the noun is
marked for number (plural = stem + "s"), the determiner (``ta`` definite,
``ek`` indefinite) and the verb do not inflect.

Target language (German-like), derived from the same tree:

* LOCAL reordering: ``det adj1 adj2 noun`` -> ``det noun adj2 adj1`` (the
  adjectives follow the noun, in mirror order);
* verb-final clauses: ``subj mod obj adv neg verb`` (object and adverb move
  before the verb, negation sits right before it); relative clauses are
  verb-final too (``rel obj verb``);
* LONG-DISTANCE agreement: the clause-final verb agrees in number with the
  clause's subject (singular stem + "t", plural stem + "n"), across the
  subject's modifier (PPs or a relative clause of variable length), the object
  and the adverb, which often contain nouns of the other number (attractors);
  the verb of a subject relative agrees with the modified noun, the verb of an
  object relative with its own subject;
* local agreement: the determiner agrees with its noun in number and
  definiteness (4 forms), the relative pronoun with the modified noun (2 forms);
  plural nouns are stem + "er".

Sentences are 4 to 30 tokens long ("." included).  About 260 source and 310
target word types.  Valid and test sentences never repeat a source sentence of
an earlier split (train, then valid), so held-out scores measure generalisation.

Usage::

    python make_demo_corpus.py --out DIR [--train N] [--valid N] [--test N] [--seed S]

writes ``DIR/{train,valid,test}.{src,tgt}``, one sentence per line, tokens
separated by single spaces.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

SRC, TGT = "src", "tgt"
SPLITS = ("train", "valid", "test")
MIN_LEN, MAX_LEN = 4, 30
LEXICON_SEED = 20240611  # fixed: the languages never change, only the sentences do

N_NOUNS, N_ADJS, N_TVERBS, N_IVERBS, N_ADVS, N_PREPS = 72, 36, 36, 12, 16, 10

# Function words, hand-made.  Source and target words never coincide.
SRC_DET = {"def": "ta", "indef": "ek"}
TGT_DET = {("def", "sg"): "zo", ("def", "pl"): "zy", ("indef", "sg"): "jo", ("indef", "pl"): "jyw"}
SRC_REL, TGT_REL = "ki", {"sg": "wo", "pl": "wy"}
SRC_NEG, TGT_NEG = "nu", "hej"
SRC_CONJ = ("pa", "sul")  # "and", "but"
TGT_CONJ = ("og", "bef")
PUNCT = "."

# Inflection suffixes.
SRC_NOUN_PL = "s"
TGT_NOUN_PL = "er"
TGT_VERB = {"sg": "t", "pl": "n"}

# Phonotactics: disjoint consonants, so content words of the two sides never collide.
SRC_CONS, SRC_VOW = "klmnprstv", "aiu"
TGT_CONS, TGT_VOW = "bdfghjwz", "aeoy"


class Lexicon:
    """The fixed bilingual lexicon.

    ``src_info[token]`` / ``tgt_info[token]`` give ``(category, lemma, features)``
    where ``lemma`` is an index shared by a word and its translation and
    ``features`` is a dict (``num`` for nouns, target verbs, target determiners and
    relative pronouns; ``def`` for determiners; ``trans`` for verbs).
    """

    def __init__(self, seed: int = LEXICON_SEED):
        rng = random.Random(seed)
        taken = set(SRC_DET.values()) | set(TGT_DET.values()) | {SRC_REL, SRC_NEG, TGT_NEG, PUNCT}
        taken |= set(TGT_REL.values()) | set(SRC_CONJ) | set(TGT_CONJ)

        def stem(cons, vows, nsyl):
            while True:
                w = "".join(rng.choice(cons) + rng.choice(vows) for _ in range(nsyl))
                if rng.random() < 0.3:
                    w = rng.choice(vows) + w
                # every inflected form must be new, too
                forms = {w, w + SRC_NOUN_PL, w + TGT_NOUN_PL} | {w + s for s in TGT_VERB.values()}
                if not forms & taken:
                    taken.update(forms)
                    return w

        def pairs(n, nsyl):
            return [(stem(SRC_CONS, SRC_VOW, rng.choice(nsyl)), stem(TGT_CONS, TGT_VOW, rng.choice(nsyl)))
                    for _ in range(n)]

        self.nouns = pairs(N_NOUNS, (2, 2, 3))
        self.adjs = pairs(N_ADJS, (2, 3))
        self.tverbs = pairs(N_TVERBS, (2, 3))
        self.iverbs = pairs(N_IVERBS, (2, 3))
        self.advs = pairs(N_ADVS, (3,))
        self.preps = pairs(N_PREPS, (1,))

        self.src_info: dict[str, tuple[str, int, dict]] = {}
        self.tgt_info: dict[str, tuple[str, int, dict]] = {}
        lemma = 0

        def add(side, tok, cat, lem, **feat):
            table = self.src_info if side == SRC else self.tgt_info
            assert tok not in table, tok
            table[tok] = (cat, lem, feat)

        for s, t in self.nouns:
            for num in ("sg", "pl"):
                add(SRC, s + (SRC_NOUN_PL if num == "pl" else ""), "noun", lemma, num=num)
                add(TGT, t + (TGT_NOUN_PL if num == "pl" else ""), "noun", lemma, num=num)
            lemma += 1
        for words, cat in ((self.adjs, "adj"), (self.advs, "adv"), (self.preps, "prep")):
            for s, t in words:
                add(SRC, s, cat, lemma)
                add(TGT, t, cat, lemma)
                lemma += 1
        for words, trans in ((self.tverbs, True), (self.iverbs, False)):
            for s, t in words:
                add(SRC, s, "verb", lemma, trans=trans)
                for num, suf in TGT_VERB.items():
                    add(TGT, t + suf, "verb", lemma, trans=trans, num=num)
                lemma += 1
        for d, w in SRC_DET.items():
            add(SRC, w, "det", lemma, **{"def": d})
            for num in ("sg", "pl"):
                add(TGT, TGT_DET[d, num], "det", lemma, num=num, **{"def": d})
            lemma += 1
        add(SRC, SRC_REL, "rel", lemma)
        for num, w in TGT_REL.items():
            add(TGT, w, "rel", lemma, num=num)
        lemma += 1
        add(SRC, SRC_NEG, "neg", lemma)
        add(TGT, TGT_NEG, "neg", lemma)
        lemma += 1
        for s, t in zip(SRC_CONJ, TGT_CONJ):
            add(SRC, s, "conj", lemma)
            add(TGT, t, "conj", lemma)
            lemma += 1
        add(SRC, PUNCT, "punct", lemma)
        add(TGT, PUNCT, "punct", lemma)
        assert not set(self.src_info) & (set(self.tgt_info) - {PUNCT})


# ---------------------------------------------------------------------------
# Trees.  A noun phrase is a dict: det, adjs (lexicon indices), noun, num, mods.
# A clause is a dict: subj, neg, verb, trans, obj, adv.


class Generator:
    def __init__(self, lex: Lexicon, rng: random.Random):
        self.lex, self.rng = lex, rng

    def np(self, role: str = "inner") -> dict:
        """A noun phrase; ``role`` is "subj" (may take a modifier), "obj" (may take a PP) or "inner"."""
        r = self.rng
        n_adj = r.choices((0, 1, 2), weights=(5, 3, 1))[0]
        np = {
            "det": r.choice(("def", "indef")),
            "adjs": r.sample(range(len(self.lex.adjs)), n_adj),
            "noun": r.randrange(len(self.lex.nouns)),
            "num": r.choice(("sg", "pl")),
            "mods": [],
        }
        if role == "subj":
            kind = r.choices(("none", "pp", "pp2", "rc_subj", "rc_obj"), weights=(3, 3, 1, 2, 2))[0]
            if kind in ("pp", "pp2"):
                for _ in range(1 if kind == "pp" else 2):
                    np["mods"].append(("pp", r.randrange(len(self.lex.preps)), self.np()))
            elif kind != "none":
                np["mods"].append((kind, r.random() < 0.15, r.randrange(len(self.lex.tverbs)), self.np()))
        elif role == "obj" and r.random() < 0.15:
            np["mods"].append(("pp", r.randrange(len(self.lex.preps)), self.np()))
        return np

    def clause(self) -> dict:
        r = self.rng
        trans = r.random() < 0.8
        verbs = self.lex.tverbs if trans else self.lex.iverbs
        return {
            "subj": self.np("subj"),
            "neg": r.random() < 0.15,
            "trans": trans,
            "verb": r.randrange(len(verbs)),
            "obj": self.np("obj") if trans else None,
            "adv": r.randrange(len(self.lex.advs)) if r.random() < 0.3 else None,
        }

    def sentence(self) -> tuple[list[str], list[str]]:
        while True:
            clauses = [self.clause()]
            conj = None
            if self.rng.random() < 0.25:
                conj = self.rng.randrange(len(SRC_CONJ))
                clauses.append(self.clause())
            src, tgt = render(self.lex, clauses, conj)
            if MIN_LEN <= len(src) <= MAX_LEN:
                return src, tgt


def _src_np(lex: Lexicon, np: dict) -> list[str]:
    noun = lex.nouns[np["noun"]][0] + (SRC_NOUN_PL if np["num"] == "pl" else "")
    out = [SRC_DET[np["det"]]] + [lex.adjs[a][0] for a in np["adjs"]] + [noun]
    for mod in np["mods"]:
        if mod[0] == "pp":
            out += [lex.preps[mod[1]][0]] + _src_np(lex, mod[2])
        else:
            kind, neg, verb, inner = mod
            v = ([SRC_NEG] if neg else []) + [lex.tverbs[verb][0]]
            if kind == "rc_subj":  # rel (neg) verb np
                out += [SRC_REL] + v + _src_np(lex, inner)
            else:  # rel np (neg) verb
                out += [SRC_REL] + _src_np(lex, inner) + v
    return out


def _tgt_verb(stem: str, num: str) -> str:
    return stem + TGT_VERB[num]


def _tgt_np(lex: Lexicon, np: dict) -> list[str]:
    noun = lex.nouns[np["noun"]][1] + (TGT_NOUN_PL if np["num"] == "pl" else "")
    out = [TGT_DET[np["det"], np["num"]], noun] + [lex.adjs[a][1] for a in reversed(np["adjs"])]
    for mod in np["mods"]:
        if mod[0] == "pp":
            out += [lex.preps[mod[1]][1]] + _tgt_np(lex, mod[2])
        else:
            kind, neg, verb, inner = mod
            agr = np["num"] if kind == "rc_subj" else inner["num"]
            # relative clauses are verb-final on the target side
            out += [TGT_REL[np["num"]]] + _tgt_np(lex, inner) + ([TGT_NEG] if neg else [])
            out += [_tgt_verb(lex.tverbs[verb][1], agr)]
    return out


def render(lex: Lexicon, clauses: list[dict], conj: int | None) -> tuple[list[str], list[str]]:
    src: list[str] = []
    tgt: list[str] = []
    for i, c in enumerate(clauses):
        if i:
            src.append(SRC_CONJ[conj])
            tgt.append(TGT_CONJ[conj])
        verbs = lex.tverbs if c["trans"] else lex.iverbs
        s_verb, t_stem = verbs[c["verb"]]
        # source: subj (neg) verb (obj) (adv)
        src += _src_np(lex, c["subj"]) + ([SRC_NEG] if c["neg"] else []) + [s_verb]
        if c["obj"] is not None:
            src += _src_np(lex, c["obj"])
        if c["adv"] is not None:
            src.append(lex.advs[c["adv"]][0])
        # target: subj (obj) (adv) (neg) verb[agrees with subj]
        tgt += _tgt_np(lex, c["subj"])
        if c["obj"] is not None:
            tgt += _tgt_np(lex, c["obj"])
        if c["adv"] is not None:
            tgt.append(lex.advs[c["adv"]][1])
        tgt += ([TGT_NEG] if c["neg"] else []) + [_tgt_verb(t_stem, c["subj"]["num"])]
    src.append(PUNCT)
    tgt.append(PUNCT)
    assert len(src) == len(tgt)
    return src, tgt


def generate(sizes: dict[str, int], seed: int) -> dict[str, list[tuple[str, str]]]:
    """Return ``{split: [(src_line, tgt_line), ...]}``; held-out splits avoid earlier sources."""
    lex = Lexicon()
    seen: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        n = sizes.get(split, 0)
        gen = Generator(lex, random.Random(f"fairseq-nas-demo:{seed}:{split}"))
        pairs: list[tuple[str, str]] = []
        new_seen: set[str] = set()
        tries = 0
        while len(pairs) < n:
            tries += 1
            if tries > 100 * n + 1000:
                raise RuntimeError(f"could not draw {n} new {split} sentences")
            s, t = gen.sentence()
            s_line, t_line = " ".join(s), " ".join(t)
            if split != "train" and s_line in seen:
                continue
            pairs.append((s_line, t_line))
            new_seen.add(s_line)
        seen |= new_seen
        out[split] = pairs
    return out


def write_corpus(out_dir: str, sizes: dict[str, int], seed: int) -> dict[str, list[tuple[str, str]]]:
    os.makedirs(out_dir, exist_ok=True)
    data = generate(sizes, seed)
    for split, pairs in data.items():
        for side, lang in enumerate((SRC, TGT)):
            path = os.path.join(out_dir, f"{split}.{lang}")
            with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
                for pair in pairs:
                    f.write(pair[side] + "\n")
            os.replace(path + ".tmp", path)
    return data


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder for {train,valid,test}.{src,tgt}")
    p.add_argument("--train", type=_positive_int, default=20000)
    p.add_argument("--valid", type=_positive_int, default=500)
    p.add_argument("--test", type=_positive_int, default=500)
    p.add_argument("--seed", type=_int, default=1)
    a = p.parse_args(argv)
    try:
        data = write_corpus(a.out, {"train": a.train, "valid": a.valid, "test": a.test}, a.seed)
    except (OSError, RuntimeError) as e:
        print(f"make_demo_corpus.py: error: {e}", file=sys.stderr)
        return 1
    lens = [len(s.split()) for s, _ in data["train"]]
    print(f"make_demo_corpus.py: wrote {a.out}/{{train,valid,test}}.{{src,tgt}}: "
          + ", ".join(f"{k} {len(v)}" for k, v in data.items())
          + f" pairs; train length mean {sum(lens) / len(lens):.1f} (min {min(lens)}, max {max(lens)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
