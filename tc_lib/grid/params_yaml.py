"""Reading a params file's YAML (and --set / --only values) as a params file means it: a key given twice
is an error, merge keys (`<<: *base`) work, scalars follow YAML 1.2 (1e-4 is a number; no, yes, on and off
are words), nesting is bounded and keys that name fields are strings."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

MAX_DEPTH = 20  # mappings and lists nested deeper than this are refused
MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML 1.2 floats: PyYAML reads YAML 1.1, where 1e-4 (no dot) is a string; in a params file it is a number
FLOAT_12 = re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$""")
# YAML 1.2 booleans: PyYAML reads YAML 1.1, where no, yes, on and off are booleans (`mixed_precision: no`
# would be False)
BOOL_TAG = "tag:yaml.org,2002:bool"
BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


@functools.cache
def strict_loader():
    """yaml's SafeLoader, but a key given twice in one mapping is an error (PyYAML keeps the last), merge
    keys (`<<: *base`) work, 1e-4 reads as the number it means and no/yes/on/off as words (YAML 1.2)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:  # the merged keys come from an anchor; flatten_mapping adds them
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    StrictLoader.yaml_implicit_resolvers = {  # the class's own copy, without YAML 1.1's booleans
        first: [(tag, regexp) for tag, regexp in resolvers if tag != BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    StrictLoader.add_implicit_resolver(BOOL_TAG, BOOL_12, list("tTfF"))
    StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_12, list("-+0123456789."))
    return StrictLoader


# where the keys of a mapping name fields (or the file's own sections): they must be strings. Keys of an
# override table (overrides.<field>) are that field's values and may be numbers or null.
def _names_fields(where: tuple) -> bool:
    return not (len(where) == 2 and where[0] == "overrides")


def _check_tree(path: Path, root: Any) -> None:
    """Before anything is built: depth at most MAX_DEPTH, and keys that name fields are strings (one
    line naming the file, the line and the key)."""
    import yaml

    stack = [(root, (), 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path} line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.tag == MERGE_TAG:
                    stack.append((value, where, depth + 1))
                    continue
                if _names_fields(where) and key.tag != "tag:yaml.org,2002:str":
                    shown = key.value if isinstance(key, yaml.ScalarNode) else "a " + key.id
                    raise ConfigError(f"{path} line {key.start_mark.line + 1}: key {shown!r} in "
                                      f"{'.'.join(map(str, where)) or 'the top level'} is not a name (a string); "
                                      "keys name fields")
                stack.append((value, (*where, key.value if isinstance(key, yaml.ScalarNode) else "?"), depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*where, index), depth + 1) for index, item in enumerate(node.value))


def load_yaml(path: Path, text: str) -> Any:
    """The document in `text` (the params file `path`), checked before it is built (depth, key types)."""
    loader = strict_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_tree(path, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
