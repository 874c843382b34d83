"""The offline real-text corpus: docstrings only, a stable split, a manifest with the licence."""

import json
from pathlib import Path

from amortized.testing.text_corpus import is_held_out, module_docstrings, write_corpus


def test_docstrings_are_read_without_importing(tmp_path: Path):
    source = tmp_path / "mod.py"
    source.write_text(
        '"""A module about nothing in particular, said in words."""\n'
        'raise SystemExit("importing this would stop the test")\n'
        "class Thing:\n"
        '    """A thing that holds other things for a while."""\n'
        "    def go(self):\n"
        '        """Too short."""\n'
    )
    text = module_docstrings(source)
    assert text == (
        "A module about nothing in particular, said in words.\n\n"
        "A thing that holds other things for a while."
    )
    (tmp_path / "broken.py").write_text("def (:\n")
    assert module_docstrings(tmp_path / "broken.py") == ""


def test_corpus_of_the_running_python(tmp_path: Path):
    files = write_corpus(tmp_path / "corpus", eval_fraction=0.1)
    manifest = json.loads(files.manifest.read_text())
    assert manifest["licence"] == "PSF-2.0"
    assert manifest["documents"]["train"] > 100
    assert manifest["documents"]["held_out"] > 5
    assert manifest["words"]["train"] > 100_000
    train = [json.loads(line) for line in files.train.read_text().splitlines()]
    held = [json.loads(line) for line in files.held_out.read_text().splitlines()]
    assert {r["module"] for r in train}.isdisjoint({r["module"] for r in held})
    assert all(is_held_out(r["module"], 0.1) for r in held)
    modules = [r["module"] for r in train + held]
    assert not any(m.startswith(("test.", "idlelib.")) for m in modules)
    assert sum(m.startswith("pydoc_data.topics:") for m in modules) > 50
