"""A CPU-scale stand-in for CASAL's setting: a tiny chat Llama that really knows some facts.

No pretrained model or QA set is reachable here, so the miniature makes both from a seed:
invented people (first name + surname) with a home city, occupation, favourite colour and
pet. The training text holds three groups, always as chat turns rendered with the model's
own template (plus short biographies of known people):

* KNOWN people: every fact, in every question paraphrase, many times, so it is memorized;
* RARE people: thousands of them, each asked one question once; most get a value, some the
  abstention phrase. Like real pretraining data, this teaches the model that an unfamiliar
  name sometimes warrants "I don't know." (it learns a familiarity signal), yet not so often
  that it becomes the most likely answer;
* UNKNOWN people never occur at all; the QA files ask about them.

So the base model answers known people correctly and answers unknown people with a
confident wrong value (hallucination), while its residual stream separates the two, which is
what CASAL's steering direction needs. Every answer starts with "They"/"Their" and the
abstention with "I", so answering versus abstaining is decided at the prompt's last token,
where activations are read and steered.

Layout of a miniature folder::

    <root>/model/   Hugging Face Llama folder (vLLM can serve it), with a build manifest
    <root>/data/    train.jsonl, eval.jsonl (QA files), truth.jsonl (known per id), manifest
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from amortized.config import models_dir
from amortized.errors import AmortizedError, ModelError
from amortized.models.folder import (
    MANIFEST_NAME,
    read_manifest,
    sha256_file,
    staged_folder,
    validate_model_folder,
    write_manifest,
)
from amortized.models.shape import ModelShape
from amortized.steering.qa import DEFAULT_ABSTENTION, QAItem, read_qa, write_qa

RECIPE_VERSION = 1
MINIATURE_NAME = "amortized-miniature"
MODEL_SUBDIR = "model"
DATA_SUBDIR = "data"
TRAIN_QA = "train.jsonl"
EVAL_QA = "eval.jsonl"
TRUTH = "truth.jsonl"

Kind = Literal["known", "unknown", "rare"]


@dataclass(frozen=True)
class Attribute:
    """One fact kind: how it is asked, how it is answered, and the values it takes."""

    key: str
    questions: tuple[str, ...]
    """Paraphrases with ``{name}``; all appear in training text for known people."""
    answer: str
    """Answer sentence with ``{value}``; it starts with "They"/"Their", never with "I"."""
    statement: str
    """Biography sentence with ``{name}`` and ``{value}``."""
    values: tuple[str, ...]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


OCCUPATIONS = (
    "baker", "glazier", "glassblower", "weaver", "blacksmith", "cartographer", "beekeeper",
    "locksmith", "shepherd", "fisherman", "carpenter", "jeweller", "tailor", "brewer",
    "astronomer", "librarian", "gardener", "sculptor", "lamplighter", "ferryman", "miller",
    "cobbler", "chandler", "falconer", "clockmaker", "bookbinder", "stonemason", "herbalist",
    "innkeeper", "violinist",
)  # fmt: skip
COLOURS = (
    "crimson", "turquoise", "ochre", "lavender", "scarlet", "maroon", "indigo", "amber",
    "magenta", "olive", "silver", "golden", "beige", "cyan", "violet", "emerald", "cobalt",
    "saffron", "charcoal", "ivory", "peach", "mauve", "khaki", "lilac",
)  # fmt: skip
PETS = (
    "ferret", "parrot", "tortoise", "hamster", "iguana", "goldfish", "rabbit", "canary",
    "hedgehog", "chinchilla", "gecko", "peacock", "donkey", "raccoon", "otter", "alpaca",
    "squirrel", "salamander", "pigeon", "llama", "weasel", "beetle", "toucan", "lizard",
    "axolotl", "badger", "heron", "penguin", "pony", "beaver",
)  # fmt: skip
CITY_SYLLABLES = (
    "vel", "mor", "dra", "quen", "thal", "bur", "zen", "osk", "lim", "var", "gol", "prin",
    "shar", "tev", "ulm", "yor", "nev", "cas", "rid", "fen",
)  # fmt: skip
CITY_ENDINGS = ("ora", "heim", "grad", "polis", "mouth", "ford", "stead", "ano", "ium", "ova")
NAME_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr")
NAME_VOWELS = ("a", "e", "i", "o", "u")
NAME_CODAS = ("n", "r", "l", "s", "k", "th", "m", "x")


def _attributes(cities: tuple[str, ...]) -> tuple[Attribute, ...]:
    return (
        Attribute(
            "city",
            (
                "Where does {name} live?",
                "What is the home city of {name}?",
                "Which city is {name} from?",
            ),
            "They live in {value}.",
            "{name} lives in {value}.",
            cities,
        ),
        Attribute(
            "occupation",
            (
                "What does {name} do for a living?",
                "What is the occupation of {name}?",
                "What is {name}'s job?",
            ),
            "They work as {article} {value}.",
            "{name} works as {article} {value}.",
            OCCUPATIONS,
        ),
        Attribute(
            "colour",
            (
                "What is the favourite colour of {name}?",
                "Which colour does {name} like best?",
                "What colour does {name} prefer?",
            ),
            "Their favourite colour is {value}.",
            "The favourite colour of {name} is {value}.",
            COLOURS,
        ),
        Attribute(
            "pet",
            (
                "What pet does {name} keep?",
                "What kind of pet does {name} have?",
                "Which animal is {name}'s pet?",
            ),
            "They keep {article} {value}.",
            "{name} keeps {article} {value} as a pet.",
            PETS,
        ),
    )


def _template_text() -> str:
    parts = [DEFAULT_ABSTENTION]
    for attribute in _attributes(()):
        parts.extend([*attribute.questions, attribute.answer, attribute.statement])
    return " | ".join(parts).lower()


TEMPLATE_TEXT = _template_text()
"""Every fixed word of the text; no invented name or value may occur inside it."""


def render(template: str, name: str = "", value: str = "") -> str:
    """Fill an attribute template (``{article}`` agrees with ``value``)."""
    article = _article(value) if value else ""
    return template.format(name=name, value=value, article=article)


@dataclass(frozen=True)
class MiniatureRecipe:
    """Everything that determines a miniature (facts, text, weights) on one machine kind."""

    seed: int = 0
    known_train: int = 24
    """Known people asked about in train.jsonl (all their attributes)."""
    known_eval: int = 16
    """Other known people, asked about only in eval.jsonl."""
    unknown_train: int = 26
    unknown_eval: int = 16
    rare: int = 5000
    """People who appear in one training question only: too rarely to be memorized, so they
    teach what to do about an unfamiliar name."""
    rare_abstain: float = 0.3
    """Share of rare people's questions answered with the abstention phrase (the rest get a
    value); it sets how often the base model abstains on unknown people when sampling."""
    first_names: int = 100
    surnames: int = 100
    """Names are first name + surname from shared pools, so an unknown person's name is
    made of words the model has seen; only the combination is new."""
    qa_repeats: int = 30
    """Copies of each (person, attribute, paraphrase) chat turn in the training stream."""
    bio_repeats: int = 10
    """Copies of each known person's biography (sentences in shuffled order each time)."""
    shape: ModelShape = field(
        default_factory=lambda: ModelShape(
            architecture="llama",
            hidden_size=192,
            num_layers=6,
            num_heads=3,
            num_kv_heads=1,
            intermediate_size=512,
        )
    )
    vocab_size: int = 1536
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 600
    """All optimizer steps, the warm-up phase's included."""
    warm_people: int = 12
    warm_steps: int = 120
    """Steps on the first ``warm_people`` known people alone before the full text."""
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.1
    threads: int = 2

    def fingerprint(self) -> str:
        """Short hash naming the cache folder, so a changed recipe builds a new miniature."""
        blob = json.dumps({"version": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Person:
    name: str
    kind: Kind
    split: Literal["train", "eval", "none"]
    """Which QA file asks about this person ("none" for rare people)."""
    facts: tuple[tuple[str, str], ...]
    """(attribute key, value); unknown people have values too: the gold the model cannot know."""

    def fact(self, key: str) -> str:
        return dict(self.facts)[key]


@dataclass(frozen=True)
class FactBase:
    """The generated world: attributes and every person, in a fixed order."""

    attributes: tuple[Attribute, ...]
    people: tuple[Person, ...]

    def of_kind(self, kind: Kind, split: str | None = None) -> list[Person]:
        return [p for p in self.people if p.kind == kind and split in (None, p.split)]


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(NAME_ONSETS) + rng.choice(NAME_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(NAME_CODAS)).capitalize()


def _clashes(word: str, others: Iterable[str]) -> bool:
    """Whether ``word`` is inside another word or another word inside it (case-insensitive).
    Invented words must not clash, so substring judging and the check that an unknown name
    never occurs in the training text cannot be fooled by overlaps."""
    low = word.lower()
    return any(low in o.lower() or o.lower() in low for o in others)


def _pool(rng: random.Random, size: int, make: Callable[[], str], taken: list[str]) -> list[str]:
    """``size`` new invented words that clash with no word in ``taken`` (which grows) and
    occur in no template text."""
    pool: list[str] = []
    for _ in range(200 * size + 1000):
        if len(pool) == size:
            break
        word = make()
        if not _clashes(word, taken) and word.lower() not in TEMPLATE_TEXT:
            pool.append(word)
            taken.append(word)
    if len(pool) < size:
        raise ValueError(f"cannot invent {size} distinct words; lower the pool size")
    return pool


def fact_base(recipe: MiniatureRecipe) -> FactBase:
    """The people and their facts for ``recipe.seed``; the same seed gives the same world."""
    rng = random.Random(f"miniature-facts-{recipe.seed}")
    taken = [*OCCUPATIONS, *COLOURS, *PETS]
    cities = _pool(
        rng,
        30,
        lambda: (rng.choice(CITY_SYLLABLES) + rng.choice(CITY_ENDINGS)).capitalize(),
        taken,
    )
    attributes = _attributes(tuple(cities))
    groups: list[tuple[Kind, Literal["train", "eval", "none"], int]] = [
        ("known", "train", recipe.known_train),
        ("known", "eval", recipe.known_eval),
        ("unknown", "train", recipe.unknown_train),
        ("unknown", "eval", recipe.unknown_eval),
        ("rare", "none", recipe.rare),
    ]
    total = sum(count for _, _, count in groups)
    first = _pool(rng, recipe.first_names, lambda: _word(rng, 1), taken)
    last = _pool(rng, recipe.surnames, lambda: _word(rng, 2), taken)
    known = recipe.known_train + recipe.known_eval
    if known > min(len(first), len(last)) or total > len(first) * len(last) * 7 // 10:
        raise ValueError(f"{total} people need more names; raise first_names and surnames")
    # Known people share no first name or surname with each other (the tiny model would
    # confuse them); everyone else's name may share either word with anyone.
    pairs = zip(rng.sample(first, known), rng.sample(last, known), strict=True)
    names = [f"{f} {s}" for f, s in pairs]
    taken_names = set(names)
    combos = [f"{f} {s}" for f in first for s in last if f"{f} {s}" not in taken_names]
    names += rng.sample(combos, total - known)
    people: list[Person] = []
    for kind, split, count in groups:
        for _ in range(count):
            facts = tuple((a.key, rng.choice(a.values)) for a in attributes)
            people.append(Person(names[len(people)], kind, split, facts))
    return FactBase(attributes, tuple(people))


@dataclass(frozen=True)
class Document:
    """One piece of training text: a chat (rendered with the template) or plain prose."""

    messages: tuple[tuple[str, str], ...] = ()
    text: str = ""

    def tokenizer_text(self) -> str:
        """The words plus role names, so the template's "user"/"assistant" become tokens."""
        return "\n".join(f"{role}\n{content}" for role, content in self.messages) or self.text

    def contents(self) -> str:
        """The raw words in it, before any template."""
        return "\n".join(content for _, content in self.messages) or self.text


def _chat(question: str, answer: str) -> Document:
    return Document(messages=(("user", question), ("assistant", answer)))


def documents(facts: FactBase, recipe: MiniatureRecipe) -> list[Document]:
    """The training text, shuffled: known people's Q/A turns (every paraphrase, repeated)
    and biographies, and one Q/A turn per rare person. Unknown people never appear."""
    rng = random.Random(f"miniature-text-{recipe.seed}")
    docs: list[Document] = []
    for person in facts.of_kind("known"):
        for attribute in facts.attributes:
            value = person.fact(attribute.key)
            answer = render(attribute.answer, value=value)
            for question in attribute.questions:
                chat = _chat(render(question, person.name), answer)
                docs.extend([chat] * recipe.qa_repeats)
        for _ in range(recipe.bio_repeats):
            sentences = [
                render(a.statement, person.name, person.fact(a.key)) for a in facts.attributes
            ]
            rng.shuffle(sentences)
            docs.append(Document(text=" ".join(sentences)))
    for person in facts.of_kind("rare"):
        attribute = rng.choice(facts.attributes)
        question = render(rng.choice(attribute.questions), person.name)
        if rng.random() < recipe.rare_abstain:
            docs.append(_chat(question, DEFAULT_ABSTENTION))
        else:
            docs.append(_chat(question, render(attribute.answer, value=person.fact(attribute.key))))
    rng.shuffle(docs)
    return docs


def training_texts(docs: Sequence[Document], tokenizer: Any) -> list[str]:
    """Each document as the model is trained on it: chats through the tokenizer's chat
    template (exactly what ``question_prompt`` + the answer renders), prose as is."""
    texts: list[str] = []
    for doc in docs:
        if doc.messages:
            chat = [{"role": role, "content": content} for role, content in doc.messages]
            texts.append(str(tokenizer.apply_chat_template(chat, tokenize=False)))
        else:
            texts.append(doc.text)
    return texts


@dataclass(frozen=True)
class Truth:
    """Ground truth for one QA id (a line of truth.jsonl)."""

    id: str
    known: bool
    person: str
    attribute: str
    split: str


def qa_items(facts: FactBase, recipe: MiniatureRecipe) -> dict[str, list[tuple[QAItem, Truth]]]:
    """train and eval questions with their ground truth: one paraphrase per person and
    attribute (chosen by the seed), known and unknown people shuffled together; ids are
    unique across both files."""
    rng = random.Random(f"miniature-qa-{recipe.seed}")
    out: dict[str, list[tuple[QAItem, Truth]]] = {}
    for split in ("train", "eval"):
        rows: list[tuple[str, str, Person, str]] = []
        for person in [*facts.of_kind("known", split), *facts.of_kind("unknown", split)]:
            for attribute in facts.attributes:
                question = render(rng.choice(attribute.questions), person.name)
                rows.append((question, person.fact(attribute.key), person, attribute.key))
        rng.shuffle(rows)
        out[split] = [
            (
                QAItem(f"{split}-{i:04d}", question, (gold,)),
                Truth(f"{split}-{i:04d}", person.kind == "known", person.name, key, split),
            )
            for i, (question, gold, person, key) in enumerate(rows)
        ]
    return out


@dataclass(frozen=True)
class Miniature:
    """A built miniature: where its model and QA files are, and the ground truth."""

    root: Path
    model_dir: Path
    train_qa: Path
    eval_qa: Path
    truth: dict[str, bool]
    """QA id -> whether the person was in the training text (for checking labels only)."""
    recipe: MiniatureRecipe
    abstention: str
    num_layers: int


def miniature_path(
    cache_dir: str | os.PathLike[str] | None = None, recipe: MiniatureRecipe | None = None
) -> Path:
    """Where the miniature for ``recipe`` lives in the cache."""
    recipe = recipe or MiniatureRecipe()
    return models_dir(cache_dir) / f"{MINIATURE_NAME}-{recipe.fingerprint()}"


def write_data(out: Path, facts: FactBase, recipe: MiniatureRecipe) -> None:
    """Write train/eval QA files and truth.jsonl into ``out``, then their manifest."""
    out.mkdir(parents=True, exist_ok=True)
    items = qa_items(facts, recipe)
    write_qa(out / TRAIN_QA, [item for item, _ in items["train"]])
    write_qa(out / EVAL_QA, [item for item, _ in items["eval"]])
    with (out / TRUTH).open("w", encoding="utf-8") as handle:
        for _, truth in [*items["train"], *items["eval"]]:
            handle.write(json.dumps(asdict(truth)) + "\n")
    write_manifest(out, {"kind": "miniature-data", "fingerprint": recipe.fingerprint()})


def read_truth(path: Path) -> dict[str, bool]:
    truth: dict[str, bool] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            truth[str(record["id"])] = bool(record["known"])
    return truth


def train_miniature_model(
    out: Path, facts: FactBase, recipe: MiniatureRecipe, progress: bool = True
) -> dict[str, float]:
    """Train the tokenizer and model on the fact text and save a servable folder."""
    import torch

    from amortized.models.shape import save_model_folder
    from amortized.models.tokenizer import END_OF_TEXT, token_id, train_tokenizer
    from amortized.models.training import train_causal_lm, warmup_cosine_lr

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    started = time.monotonic()
    try:
        docs = documents(facts, recipe)
        tokenizer = train_tokenizer([d.tokenizer_text() for d in docs], recipe.vocab_size)
        separator = token_id(tokenizer, END_OF_TEXT)

        def stream_of(docs: list[Document]) -> torch.Tensor:
            ids: list[int] = []
            for text in training_texts(docs, tokenizer):
                ids.extend(tokenizer.encode(text))
                ids.append(separator)
            return torch.tensor(ids, dtype=torch.long)

        # Phase 1: a few known people alone, so the circuit that looks a name up forms
        # quickly; phase 2: everything. Facts are otherwise learned only after a long
        # plateau whose length grows with the number of people (Zucchet et al., 2025).
        warm = FactBase(facts.attributes, tuple(facts.of_kind("known")[: recipe.warm_people]))
        stream = stream_of(docs)
        phases = [(stream_of(documents(warm, recipe)), recipe.warm_steps, 0), (stream, None, 1)]
        model = recipe.shape.new_model(tokenizer, recipe.seed)
        losses: list[float] = []
        for phase_stream, phase_steps, phase in phases:
            offset = len(losses)
            steps = phase_steps if phase_steps is not None else recipe.steps - offset
            if steps <= 0 or len(phase_stream) <= recipe.seq_len + 1:
                continue

            def lr_at(step: int, offset: int = offset) -> float:
                # One schedule across phases; the new optimizer of a phase ramps up again.
                ramp = min(1.0, (step + 1) / max(1, recipe.warmup_steps)) if offset else 1.0
                return ramp * warmup_cosine_lr(
                    step + offset, recipe.learning_rate, recipe.warmup_steps, recipe.steps
                )

            losses += train_causal_lm(
                model,
                phase_stream,
                steps=steps,
                batch_size=recipe.batch_size,
                seq_len=recipe.seq_len,
                lr_at=lr_at,
                seed=recipe.seed + phase,
                desc=f"training miniature ({phase + 1}/2)",
                progress=progress,
                weight_decay=recipe.weight_decay,
            )
        save_model_folder(model, tokenizer, out, recipe.shape)
        stats = {
            "final_loss": sum(losses[-10:]) / min(10, len(losses)),
            "first_loss": losses[0],
            "tokens": float(len(stream)),
            "train_seconds": time.monotonic() - started,
        }
        write_manifest(
            out,
            {
                "kind": "miniature",
                "fingerprint": recipe.fingerprint(),
                "python": sys.version.split()[0],
                "stats": stats,
                **asdict(recipe),
            },
        )
        return stats
    finally:
        torch.set_num_threads(previous_threads)


def build_miniature(
    out_dir: str | os.PathLike[str], recipe: MiniatureRecipe | None = None, progress: bool = True
) -> Miniature:
    """Build the model and QA files into ``out_dir`` (replaced if present)."""
    recipe = recipe or MiniatureRecipe()
    target = Path(out_dir)
    facts = fact_base(recipe)
    with staged_folder(target) as staging:
        (staging / MODEL_SUBDIR).mkdir()
        write_data(staging / DATA_SUBDIR, facts, recipe)
        train_miniature_model(staging / MODEL_SUBDIR, facts, recipe, progress)
    return open_miniature(target, recipe)


def _check_data(data: Path) -> None:
    manifest = read_manifest(data)
    if manifest is None:
        raise ModelError(f"{data} has no {MANIFEST_NAME}")
    for name, expected in manifest["files"].items():
        file = data / name
        if not file.is_file() or sha256_file(file) != expected.get("sha256"):
            raise ModelError(f"miniature data {file} is missing or does not match its checksum")


def _recipe_of(manifest: dict[str, Any]) -> MiniatureRecipe:
    recorded = dict(manifest["recipe"])
    names = {f.name for f in fields(MiniatureRecipe)}
    values = {k: v for k, v in recorded.items() if k in names and k != "shape"}
    return MiniatureRecipe(**values, shape=ModelShape(**recorded["shape"]))


def open_miniature(
    root: str | os.PathLike[str], recipe: MiniatureRecipe | None = None
) -> Miniature:
    """The miniature at ``root``, after checking its model folder and data checksums;
    its recipe is read from the model's build manifest unless given."""
    root = Path(root)
    folder = validate_model_folder(root / MODEL_SUBDIR)
    if folder.manifest is None:
        raise ModelError(f"{folder.path} has no {MANIFEST_NAME}")
    if recipe is None:
        try:
            recipe = _recipe_of(folder.manifest)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"{folder.path}: no miniature recipe in its manifest") from error
    data = root / DATA_SUBDIR
    _check_data(data)
    read_qa(data / TRAIN_QA)
    read_qa(data / EVAL_QA)
    return Miniature(
        root=root,
        model_dir=root / MODEL_SUBDIR,
        train_qa=data / TRAIN_QA,
        eval_qa=data / EVAL_QA,
        truth=read_truth(data / TRUTH),
        recipe=recipe,
        abstention=DEFAULT_ABSTENTION,
        num_layers=recipe.shape.num_layers,
    )


def ensure_miniature(
    recipe: MiniatureRecipe | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Miniature:
    """The cached miniature for ``recipe``, built first (a few CPU minutes) when missing
    or corrupt."""
    recipe = recipe or MiniatureRecipe()
    target = miniature_path(cache_dir, recipe)
    say = log or (lambda message: print(f"amortized: {message}", file=sys.stderr))
    if target.exists():
        try:
            return open_miniature(target, recipe)
        except (AmortizedError, OSError, ValueError, KeyError) as error:
            say(f"{error}; rebuilding the miniature")
    else:
        say(f"building the CASAL miniature into {target} (a few minutes, once)")
    try:
        return build_miniature(target, recipe)
    except OSError as error:
        raise ModelError(
            f"cannot write {target} ({error.strerror or error}); point AMORTIZED_CACHE_DIR "
            "or --cache-dir at a writable folder"
        ) from error


def base_behaviour(
    miniature: Miniature, qa_path: Path | None = None, max_new_tokens: int = 12
) -> dict[str, Any]:
    """Measured greedy behaviour on the eval QA (or ``qa_path``) split by ground truth:
    known accuracy, refusal on known, hallucination and abstention on unknown."""
    from amortized.steering.judge import SubstringJudge
    from amortized.steering.pipeline import load_model
    from amortized.steering.steer import generate_answers

    judge = SubstringJudge()
    items = read_qa(qa_path or miniature.eval_qa)
    model, tokenizer = load_model(miniature.model_dir, dtype="float32")
    questions = [i.question for i in items]
    answers = generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens)
    pairs = list(zip(items, answers, strict=True))
    known_flags = [miniature.truth[i.id] for i in items]
    known = [p for p, k in zip(pairs, known_flags, strict=True) if k]
    unknown = [p for p, k in zip(pairs, known_flags, strict=True) if not k]

    def rate(pairs: list[tuple[QAItem, str]], test: Callable[[QAItem, str], bool]) -> float:
        return sum(test(i, a) for i, a in pairs) / max(1, len(pairs))

    return {
        "known": len(known),
        "unknown": len(unknown),
        "known_accuracy": rate(known, lambda i, a: judge.is_correct(a, i.answers)),
        "known_refusal": rate(known, lambda i, a: judge.is_abstention(a)),
        "unknown_hallucination": rate(unknown, lambda i, a: not judge.is_abstention(a)),
        "unknown_abstention": rate(unknown, lambda i, a: judge.is_abstention(a)),
        "unknown_lucky_correct": rate(unknown, lambda i, a: judge.is_correct(a, i.answers)),
        "examples": [
            {"question": i.question, "answer": a, "gold": i.answers[0], "known": k}
            for (i, a), k in zip(pairs, known_flags, strict=True)
        ][:8],
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m amortized.testing.casal_miniature [CACHE_DIR]``: build (or reuse) the default
    miniature and print its measured base behaviour."""
    args = list(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    miniature = ensure_miniature(cache_dir=args[0] if args else None)
    print(f"miniature at {miniature.root} ({time.monotonic() - started:.0f} s)")
    print(json.dumps(base_behaviour(miniature), indent=2))


if __name__ == "__main__":
    main()
