"""The judge: a documented phrase list, phrases learned from a model's own refusals, and
agreement with hand labels (tests/steering/data/judge_sample.jsonl: 39 answers written in
the style of small instruct models and labelled by hand, a stand-in until real model answers
are labelled; it includes cases substring matching gets wrong)."""

import json
from pathlib import Path

import pytest

from amortized.steering.judge import (
    JudgedAnswer,
    SubstringJudge,
    judge_agreement,
    learn_abstention_phrases,
    verdict,
)

SAMPLE = Path(__file__).parent / "data" / "judge_sample.jsonl"
PAPER_PHRASES = ("i don't know", "i do not know", "i'm not sure", "i am not sure")


def hand_labelled() -> list[JudgedAnswer]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    return [JudgedAnswer(r["answer"], tuple(r["gold"]), r["verdict"]) for r in rows]


def test_the_documented_list_agrees_with_hand_labels():
    sample = hand_labelled()
    assert len(sample) == 39
    default = judge_agreement(SubstringJudge(), sample)
    narrow = judge_agreement(SubstringJudge(PAPER_PHRASES), sample)
    # 35 of 39: the misses are "no idea", "does not appear to be a real", "don't
    # recognise" and a correct name quoted inside a wrong answer.
    assert default == pytest.approx(35 / 39)
    assert narrow < default - 0.2


def test_refusal_phrasing_is_normalised():
    judge = SubstringJudge()
    assert judge.is_abstention("I\u2019m NOT aware, sorry.")
    assert judge.is_abstention("Hmm... I couldn't   find it.")
    assert not judge.is_abstention("The capital is Paris.")
    assert verdict(judge, "I don't know, maybe Paris?", ["Paris"]) == "abstain"


def test_a_models_own_refusals_are_learned():
    refusals = [
        "Hmm, that name is not in my records.",
        "Hmm, that name is not in my records, sorry.",
        "Hmm, that place is not in my records.",
        "I don't know.",
    ]
    answers = ["Hmm, the capital is Paris.", "That name is famous: it is Ada Lovelace."]
    learned = learn_abstention_phrases(refusals, answers)
    assert learned == ["hmm that name", "hmm that place", "i don't know"]
    judge = SubstringJudge().with_phrases(learned)
    assert judge.is_abstention("Hmm, that name rings no bell.")
    assert not judge.is_abstention("Hmm, the answer is Lima.")
    assert judge.abstention_phrases.count("i don't know") == 1
    assert learn_abstention_phrases([], answers) == []
    with pytest.raises(ValueError, match="empty"):
        judge_agreement(judge, [])
