"""Real English text on any machine with Python and no network: the docstrings of the
standard library's own source and the language reference topics pydoc ships
(``pydoc_data/topics.py``), read with ``ast``, never imported, so no module's import side
effects run. Licence: the Python Software Foundation License, as CPython's source.

Used where a real pretrained model needs held-out natural text (KV-prediction training and
perplexity); one document per module, split into training and held-out modules by a hash of
the module name, so the split does not depend on the machine's file order.
"""

import ast
import hashlib
import json
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

SOURCE = "CPython standard library docstrings and pydoc reference topics"
LICENCE = "PSF-2.0"
SKIPPED_PACKAGES = ("test", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__")


@dataclass(frozen=True)
class Document:
    """One module's docstrings, in source order, separated by blank lines."""

    module: str
    text: str


def module_docstrings(path: Path) -> str:
    """The module, class and function docstrings of one source file, or ``""``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    nodes = [tree, *ast.walk(tree)]
    seen: set[int] = set()
    parts = []
    for node in nodes:
        if id(node) in seen or not isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ):
            continue
        seen.add(id(node))
        doc = ast.get_docstring(node)
        if doc and len(doc.split()) >= 5:
            parts.append(doc.strip())
    return "\n\n".join(parts)


def reference_topics(path: Path) -> list[Document]:
    """The language reference's topics from ``pydoc_data/topics.py`` (a dict of strings)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "topics" for t in node.targets
        ):
            try:
                topics = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [
                Document(f"pydoc_data.topics:{name}", text.strip())
                for name, text in sorted(topics.items())
                if isinstance(text, str) and text.strip()
            ]
    return []


def stdlib_documents(stdlib: Path | None = None, min_words: int = 100) -> list[Document]:
    """The reference topics, and every standard-library module with at least ``min_words``
    words of docstrings."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    documents = reference_topics(root / "pydoc_data" / "topics.py")
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in SKIPPED_PACKAGES for part in relative.parts) or relative.parts[0] == (
            "pydoc_data"
        ):
            continue
        text = module_docstrings(path)
        if len(text.split()) >= min_words:
            module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
            documents.append(Document(module, text))
    return documents


def is_held_out(module: str, eval_fraction: float) -> bool:
    """A stable, machine-independent split by module name."""
    digest = hashlib.sha256(module.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < eval_fraction


@dataclass(frozen=True)
class CorpusFiles:
    """``.jsonl`` files of ``{"text"}`` records, and the manifest saying what they hold."""

    train: Path
    held_out: Path
    manifest: Path


def write_corpus(out: Path, eval_fraction: float = 0.1, stdlib: Path | None = None) -> CorpusFiles:
    """Write ``train.jsonl``, ``held_out.jsonl`` and ``corpus.json`` (source, licence, counts)."""
    documents = stdlib_documents(stdlib)
    out.mkdir(parents=True, exist_ok=True)
    files = CorpusFiles(out / "train.jsonl", out / "held_out.jsonl", out / "corpus.json")
    split: dict[str, list[Document]] = {"train": [], "held_out": []}
    for document in documents:
        split["held_out" if is_held_out(document.module, eval_fraction) else "train"].append(
            document
        )
    for name, path in (("train", files.train), ("held_out", files.held_out)):
        lines = [json.dumps({"text": d.text, "module": d.module}) for d in split[name]]
        path.write_text("\n".join(lines) + "\n")
    manifest = {
        "source": SOURCE,
        "licence": LICENCE,
        "python": platform.python_version(),
        "eval_fraction": eval_fraction,
        "documents": {name: len(docs) for name, docs in split.items()},
        "words": {name: sum(len(d.text.split()) for d in docs) for name, docs in split.items()},
        "held_out_modules": [d.module for d in split["held_out"]],
    }
    files.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    return files
