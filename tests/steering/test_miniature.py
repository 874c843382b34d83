import dataclasses
import json

import pytest

from amortized.models.folder import validate_model_folder
from amortized.models.shape import ModelShape
from amortized.models.tokenizer import train_tokenizer
from amortized.steering.miniature import (
    DATA_SUBDIR,
    EVAL_QA,
    MODEL_SUBDIR,
    TEMPLATE_TEXT,
    TRAIN_QA,
    TRUTH,
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
from amortized.steering.qa import DEFAULT_ABSTENTION, question_prompt, read_qa

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
    warmup_steps=2,
)


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
def test_base_behaviour_reports_rates(tmp_path):
    mini = ensure_miniature(SMALL, cache_dir=tmp_path, log=lambda _: None)
    report = base_behaviour(mini, max_new_tokens=4)
    assert report["known"] == 4 * SMALL.known_eval
    assert report["unknown"] == 4 * SMALL.unknown_eval
    for key in ("known_accuracy", "known_refusal", "unknown_hallucination", "unknown_abstention"):
        assert 0.0 <= report[key] <= 1.0
    assert report["unknown_hallucination"] + report["unknown_abstention"] == pytest.approx(1.0)
