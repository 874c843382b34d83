import dataclasses
import json
from pathlib import Path

import pytest

from amortized.models.folder import validate_model_folder
from amortized.models.shape import ModelShape
from amortized.models.tokenizer import train_tokenizer
from amortized.steering.casal import CasalConfig, apply_casal
from amortized.steering.evaluation import evaluate_model
from amortized.steering.labelling import Label, LabelledItem
from amortized.steering.pipeline import (
    casal_from_labels,
    load_model,
    vectors_from_labels,
)
from amortized.steering.qa import DEFAULT_ABSTENTION, question_prompt, read_qa
from amortized.testing.casal_miniature import (
    DATA_SUBDIR,
    EVAL_QA,
    MODEL_SUBDIR,
    TEMPLATE_TEXT,
    TRAIN_QA,
    TRUTH,
    Miniature,
    MiniatureRecipe,
    _clashes,
    base_behaviour,
    documents,
    ensure_miniature,
    fact_base,
    miniature_path,
    qa_items,
    training_texts,
    write_data,
)

RECIPE = MiniatureRecipe()

SMALL = MiniatureRecipe(
    known_train=6,
    known_eval=4,
    unknown_train=6,
    unknown_eval=4,
    rare=60,
    first_names=20,
    surnames=20,
    qa_repeats=2,
    bio_repeats=1,
    shape=ModelShape(
        hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128
    ),
    vocab_size=400,
    seq_len=64,
    batch_size=4,
    steps=20,
    warm_steps=0,
    warmup_steps=2,
)
"""Builds in seconds; too small to learn its facts."""

LEARNED = MiniatureRecipe(
    known_train=8,
    known_eval=4,
    unknown_train=8,
    unknown_eval=8,
    rare=1500,
    first_names=50,
    surnames=50,
    qa_repeats=20,
    bio_repeats=5,
    shape=ModelShape(
        hidden_size=128, num_layers=4, num_heads=2, num_kv_heads=1, intermediate_size=384
    ),
    vocab_size=800,
    seq_len=96,
    steps=250,
    warm_people=6,
    warm_steps=60,
    learning_rate=3e-3,
)
"""Builds in about 30 s and already knows most facts of its known people while answering
every unknown person with a confident guess."""


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Miniature:
    return ensure_miniature(LEARNED, cache_dir=tmp_path_factory.mktemp("mini"), log=print)


def truth_labels(mini: Miniature, path: Path) -> list[LabelledItem]:
    """Labels from the generator's ground truth (sampling-based labelling is tested in
    test_labelling and the CLI pipeline)."""
    return [
        LabelledItem(
            i.id,
            i.question,
            i.answers,
            Label.KNOWN if mini.truth[i.id] else Label.UNKNOWN,
            0,
            0,
            0,
            (),
        )
        for i in read_qa(path)
    ]


def test_fact_base_is_deterministic_per_seed():
    assert fact_base(RECIPE) == fact_base(RECIPE)
    assert documents(fact_base(SMALL), SMALL) == documents(fact_base(SMALL), SMALL)
    other = fact_base(dataclasses.replace(RECIPE, seed=1))
    assert [p.name for p in other.people] != [p.name for p in fact_base(RECIPE).people]


def test_groups_have_the_recipe_sizes_and_unique_names():
    facts = fact_base(RECIPE)
    names = [p.name for p in facts.people]
    assert len(names) == len(set(names))
    assert len(facts.of_kind("known", "train")) == RECIPE.known_train
    assert len(facts.of_kind("known", "eval")) == RECIPE.known_eval
    assert len(facts.of_kind("unknown", "train")) == RECIPE.unknown_train
    assert len(facts.of_kind("unknown", "eval")) == RECIPE.unknown_eval
    assert len(facts.of_kind("rare")) == RECIPE.rare


def test_values_never_overlap_each_other_the_templates_or_the_abstention():
    values = [v for a in fact_base(RECIPE).attributes for v in a.values]
    assert len(values) == len(set(values))
    for i, value in enumerate(values):
        assert not _clashes(value, values[:i] + values[i + 1 :]), value
        assert value.lower() not in TEMPLATE_TEXT, value
        assert value.lower() not in DEFAULT_ABSTENTION.lower()


def test_unknown_people_never_occur_in_the_training_text():
    facts = fact_base(RECIPE)
    corpus = "\n".join(d.contents() for d in documents(facts, RECIPE))
    for person in facts.of_kind("unknown"):
        assert person.name not in corpus
        # ...though the words of their names are familiar: only the combination is new.
        first, last = person.name.split()
        assert f"{first} " in corpus
        assert f" {last}" in corpus
    for person in facts.of_kind("known"):
        for key, value in person.facts:
            assert f"{person.name}" in corpus
            assert value in corpus, (person.name, key)


def test_rendered_text_continues_question_prompt_and_hides_unknown_people():
    facts = fact_base(SMALL)
    docs = documents(facts, SMALL)
    tokenizer = train_tokenizer([d.tokenizer_text() for d in docs], SMALL.vocab_size)
    texts = training_texts(docs, tokenizer)
    corpus = "\n".join(texts)
    for person in facts.of_kind("unknown"):
        assert person.name not in corpus
    chats = [(d, t) for d, t in zip(docs, texts, strict=True) if d.messages]
    assert any(d.messages[1][1] == DEFAULT_ABSTENTION for d, _ in chats)
    for doc, text in chats[:20]:
        (_, question), (_, answer) = doc.messages
        assert text.startswith(question_prompt(tokenizer, question) + answer)


def test_qa_files_are_valid_and_truth_matches_the_groups(tmp_path):
    facts = fact_base(RECIPE)
    write_data(tmp_path, facts, RECIPE)
    train, evaluation = read_qa(tmp_path / TRAIN_QA), read_qa(tmp_path / EVAL_QA)
    assert len(train) == 4 * (RECIPE.known_train + RECIPE.unknown_train)
    assert len(evaluation) == 4 * (RECIPE.known_eval + RECIPE.unknown_eval)
    truth = [json.loads(line) for line in (tmp_path / TRUTH).read_text().splitlines()]
    by_id = {t["id"]: t for t in truth}
    assert set(by_id) == {i.id for i in train} | {i.id for i in evaluation}
    people = {p.name: p for p in facts.people}
    for item in [*train, *evaluation]:
        record = by_id[item.id]
        person = people[record["person"]]
        assert person.name in item.question
        assert record["known"] == (person.kind == "known")
        assert item.answers == (person.fact(record["attribute"]),)
        assert person.split == record["split"] == item.id.split("-")[0]
    # Train and eval ask about different people.
    train_people = {by_id[i.id]["person"] for i in train}
    eval_people = {by_id[i.id]["person"] for i in evaluation}
    assert not train_people & eval_people
    assert qa_items(facts, RECIPE) == qa_items(facts, RECIPE)


def test_cache_path_follows_env_and_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("AMORTIZED_CACHE_DIR", str(tmp_path))
    path = miniature_path()
    assert path.parent == tmp_path / "models"
    assert path.name.endswith(RECIPE.fingerprint())
    assert miniature_path(recipe=SMALL) != path


@pytest.mark.slow
def test_small_miniature_builds_caches_and_answers(tmp_path):
    messages: list[str] = []
    mini = ensure_miniature(SMALL, cache_dir=tmp_path, log=messages.append)
    assert mini.root == miniature_path(tmp_path, SMALL)
    folder = validate_model_folder(mini.model_dir)
    assert folder.architectures == ("LlamaForCausalLM",)
    assert folder.manifest is not None
    assert folder.manifest["recipe"]["fingerprint"] == SMALL.fingerprint()
    assert mini.model_dir == mini.root / MODEL_SUBDIR
    assert mini.train_qa.parent == mini.eval_qa.parent == mini.root / DATA_SUBDIR
    assert (mini.model_dir / "tokenizer.json").is_file()
    assert set(mini.truth) == {i.id for i in read_qa(mini.train_qa)} | {
        i.id for i in read_qa(mini.eval_qa)
    }
    assert mini.num_layers == 2
    assert mini.abstention == DEFAULT_ABSTENTION

    # Cached: a second call reuses it without a rebuild.
    messages.clear()
    assert ensure_miniature(SMALL, cache_dir=tmp_path, log=messages.append) == mini
    assert messages == []

    # Damaged data is noticed and rebuilt.
    mini.eval_qa.write_text("{}\n")
    rebuilt = ensure_miniature(SMALL, cache_dir=tmp_path, log=messages.append)
    assert any("rebuilding" in m for m in messages)
    assert len(read_qa(rebuilt.eval_qa)) == 4 * (SMALL.known_eval + SMALL.unknown_eval)


@pytest.mark.slow
def test_learned_miniature_knows_known_people_and_hallucinates_on_unknown(learned):
    report = base_behaviour(learned, max_new_tokens=8)
    assert report["known"] == 4 * LEARNED.known_eval
    assert report["unknown"] == 4 * LEARNED.unknown_eval
    assert report["known_accuracy"] >= 0.6
    assert report["known_refusal"] <= 0.1
    assert report["unknown_hallucination"] >= 0.8
    # Unknown answers are guesses: right about as often as chance, far below known ones.
    assert report["unknown_lucky_correct"] <= report["known_accuracy"] - 0.4
    assert report["unknown_hallucination"] + report["unknown_abstention"] == pytest.approx(1.0)


@pytest.mark.slow
def test_casal_on_the_miniature_cuts_hallucination_and_keeps_known_answers(learned):
    model, tokenizer = load_model(learned.model_dir, dtype="float32")
    train = truth_labels(learned, learned.train_qa)
    evaluation = truth_labels(learned, learned.eval_qa)
    base, _ = evaluate_model(model, tokenizer, evaluation)
    assert base.hallucination >= 0.8
    # In this 4-layer model the first layer's CASAL generalizes to held-out people (measured
    # 1.0 -> 0.19 hallucination); later layers fit the training people only. The benchmark
    # picks the layer by the paper's steering sweep on the full miniature.
    layer = 0
    vector = vectors_from_labels(model, tokenizer, train, [layer])[layer]
    run = casal_from_labels(
        model, tokenizer, train, vector, CasalConfig(layer=layer, alpha=1.0, epochs=10)
    )
    assert run.result.final_loss < run.result.initial_loss
    apply_casal(model, run.result)
    casal, _ = evaluate_model(model, tokenizer, evaluation)
    assert casal.hallucination <= 0.7 * base.hallucination, (layer, base, casal)
    assert casal.known_accuracy >= base.known_accuracy - 0.15, (layer, base, casal)
    assert casal.refusal_on_known <= 0.2
