"""Training text made offline: short chat dialogues generated from a seed.

The default model has to learn something recognizable in a couple of CPU minutes, so
the corpus is many short, regular dialogues (greetings, arithmetic, counting, opposites,
spelling, what standard-library modules do) rather than prose it could never fit.
Module summaries come from the docstrings of Python's own standard library, read with
``ast`` (nothing is imported), so no download is needed.
"""

import ast
import random
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

Message = dict[str, str]

OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "up": "down",
    "left": "right",
    "open": "closed",
    "light": "dark",
    "early": "late",
    "old": "new",
    "full": "empty",
    "happy": "sad",
    "high": "low",
    "hard": "soft",
    "wet": "dry",
    "near": "far",
    "day": "night",
    "first": "last",
    "strong": "weak",
    "long": "short",
    "loud": "quiet",
}
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]
SPELL_WORDS = [
    "cat",
    "dog",
    "tree",
    "house",
    "river",
    "model",
    "token",
    "cache",
    "grid",
    "table",
    "python",
    "server",
    "green",
    "apple",
    "music",
    "light",
    "water",
]
STDLIB_MODULES = [
    "argparse",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "csv",
    "datetime",
    "difflib",
    "fractions",
    "functools",
    "gzip",
    "json",
    "random",
    "shutil",
    "statistics",
    "string",
    "tempfile",
    "textwrap",
    "uuid",
    "zipfile",
]
GREETINGS = ["Hello", "Hi", "Hello there", "Hi!", "Good morning", "Hey", "Good evening"]
SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a small model built by amortized.",
    "Answer briefly.",
]


@dataclass(frozen=True)
class Dialogue:
    """One conversation in OpenAI message form."""

    messages: tuple[Message, ...]


def stdlib_summaries(names: list[str] = STDLIB_MODULES) -> dict[str, str]:
    """First sentence of each named standard-library module's docstring."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    summaries: dict[str, str] = {}
    for name in names:
        source = stdlib / f"{name}.py"
        if not source.is_file():
            source = stdlib / name / "__init__.py"
        if not source.is_file():
            continue
        doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8")))
        if not doc:
            continue
        sentence = " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".")
        if 10 < len(sentence) < 200:
            summaries[name] = sentence + "."
    return summaries


def _turn(rng: random.Random, summaries: dict[str, str]) -> tuple[str, str]:
    kind = rng.randrange(7)
    if kind == 0:
        greeting = rng.choice(GREETINGS)
        return greeting, f"{greeting.rstrip('!')}! I am a small model. How can I help you?"
    if kind == 1:
        a, b = rng.randrange(13), rng.randrange(13)
        if rng.random() < 0.5:
            return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
        return f"What is {NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]}?", (
            f"{NUMBER_WORDS[a].capitalize()} plus {NUMBER_WORDS[b]} is {a + b}."
        )
    if kind == 2:
        start = rng.randrange(1, 20)
        stop = start + rng.randrange(2, 7)
        return f"Count from {start} to {stop}.", ", ".join(map(str, range(start, stop + 1))) + "."
    if kind == 3:
        word, opposite = rng.choice(list(OPPOSITES.items()))
        if rng.random() < 0.5:
            word, opposite = opposite, word
        return f"What is the opposite of {word}?", f"The opposite of {word} is {opposite}."
    if kind == 4:
        word = rng.choice(SPELL_WORDS)
        return f"Spell the word {word}.", f"{word} is spelled {'-'.join(word)}."
    if kind == 5 and summaries:
        name = rng.choice(sorted(summaries))
        return f"What is the {name} module for?", f"The {name} module: {summaries[name]}"
    items = rng.sample(SPELL_WORDS, 3)
    return f"Sort these words: {', '.join(items)}.", f"Sorted: {', '.join(sorted(items))}."


def dialogues(seed: int, count: int) -> Iterator[Dialogue]:
    """``count`` dialogues of one to three turns, the same for the same seed."""
    rng = random.Random(seed)
    summaries = stdlib_summaries()
    for _ in range(count):
        messages: list[Message] = []
        if rng.random() < 0.25:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        for _ in range(rng.choice((1, 1, 2, 3))):
            question, answer = _turn(rng, summaries)
            messages += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        yield Dialogue(tuple(messages))


def message_texts(chats: Iterable[Dialogue]) -> Iterator[str]:
    """Every message's text, e.g. to train a tokenizer on."""
    return (message["content"] for dialogue in chats for message in dialogue.messages)


def vocabulary(seed: int, count: int) -> set[str]:
    """Lower-cased words of the assistant turns: what a model trained on this corpus says."""
    words: set[str] = set()
    for dialogue in dialogues(seed, count):
        for message in dialogue.messages:
            if message["role"] == "assistant":
                words.update(_words(message["content"]))
    return words


def _words(text: str) -> list[str]:
    return [w for w in (t.strip(".,!?:;()<>\"'").lower() for t in text.split()) if w]
