"""Reading and writing space YAML files; the builtin spaces in `fairseq_nas/spaces/`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import yaml

from fairseq_nas.atomic import atomic_write_text
from fairseq_nas.errors import SpaceError
from fairseq_nas.space.schema import STACKS, parse_stack, stack_to_dict
from fairseq_nas.space.searchspace import SearchSpace

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"
TOP_KEYS = ("name", "description", "share_all_embeddings") + STACKS
ARCH_PREFIX = "supernet_"
YAML_HEADER = ("# fairseq-nas search space (schema: fairseq_nas/space/schema.py).\n"
               "# Per stack: layers and embed_dim are chosen once; the other dims in every layer.\n")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: let the base class report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def space_from_dict(d: Any, source: str) -> SearchSpace:
    """A validated SearchSpace from parsed YAML data; `source` names it in errors."""
    if not isinstance(d, dict):
        got = "an empty file" if d is None else f"a {type(d).__name__}"
        keys = ", ".join(TOP_KEYS)
        raise SpaceError(source, "<top level>", f"expected a mapping with keys {keys}, got {got}")
    for key in d:
        if key not in TOP_KEYS:
            raise SpaceError(source, str(key), f"unknown top-level key; valid keys: {', '.join(TOP_KEYS)}")
    name = d.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise SpaceError(source, "name", f"expected a non-empty string, got {name!r}")
    description = d.get("description") or ""
    if not isinstance(description, str):
        raise SpaceError(source, "description", f"expected a string, got {description!r}")
    share = d.get("share_all_embeddings")
    if share is not None and not isinstance(share, bool):
        raise SpaceError(source, "share_all_embeddings", f"expected true or false, got {share!r}")
    stacks = {s: parse_stack(d.get(s), s, source) for s in STACKS}
    return SearchSpace(name=name, description=description, source=source, share_all_embeddings=share, **stacks)


def parse_space(text: str, source: str = "<string>") -> SearchSpace:
    """A validated SearchSpace from YAML text."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<yaml>"
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        detail = f"{context}, {problem}" if context else problem
        raise SpaceError(source, where, f"malformed YAML: {' '.join(str(detail).split())}") from None
    return space_from_dict(data, source)


def list_builtin_spaces() -> list[str]:
    """Names of the shipped spaces (file names without .yaml; arch names add `supernet_`)."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def builtin_space_path(name: str) -> Path:
    base = name[len(ARCH_PREFIX):] if name.startswith(ARCH_PREFIX) else name
    return SPACES_DIR / f"{base}.yaml"


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.endswith((".yaml", ".yml")) or Path(spec).is_file()


def load_space(spec: Union[str, Path, SearchSpace]) -> SearchSpace:
    """A space from a builtin name ("shrinknas_iwslt14"), an arch name ("supernet_shrinknas_iwslt14")
    or a path to a YAML file. A SearchSpace is returned as is."""
    if isinstance(spec, SearchSpace):
        return spec
    if isinstance(spec, Path) or _looks_like_path(str(spec)):
        path = Path(spec)
    else:
        path = builtin_space_path(str(spec))
        if not path.is_file():
            names = ", ".join(list_builtin_spaces())
            raise SpaceError(str(spec), "<space>", f"not a file and not a builtin space; builtin spaces: "
                                                   f"{names} (or a path to a .yaml)")
    if not path.is_file():
        raise SpaceError(str(path), "<file>", "no such space file (expected a YAML search space or a builtin "
                                              f"name: {', '.join(list_builtin_spaces())})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(str(path), "<file>", f"cannot read: {e}") from None
    return parse_space(text, str(path))


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    d: dict[str, Any] = {"name": space.name, "description": space.description}
    if space.share_all_embeddings is not None:  # left out when unsaid: a space's file and hash stay as they were
        d["share_all_embeddings"] = space.share_all_embeddings
    for s in STACKS:
        d[s] = stack_to_dict(getattr(space, s), s)
    return d


def space_to_yaml(space: SearchSpace) -> str:
    body = yaml.safe_dump(space_to_dict(space), sort_keys=False, default_flow_style=None, width=110,
                          allow_unicode=True)
    return YAML_HEADER + body


def save_space(space: SearchSpace, path: Union[str, Path]) -> None:
    """Write atomically: a temporary file in the same folder, then os.replace."""
    atomic_write_text(path, space_to_yaml(space))
