"""The benchmarks' interval estimates and the real-model KVP benchmark's prompts: the
reported confidence intervals and pass-key items are only as good as these."""

import random
import statistics
from dataclasses import replace

from benchmarks._harness import bootstrap_ci, wilson
from benchmarks._kvp_real import RUNS, RealRecipe, passkey_prompt, settings_match
from transformers import AutoTokenizer

from amortized.models import ModelFolder


def test_wilson_interval_brackets_the_rate():
    low, high = wilson(7, 10)
    assert 0.39 < low < 0.7 < high < 0.9
    assert wilson(0, 20)[0] == 0.0
    assert wilson(20, 20)[1] == 1.0


def test_bootstrap_interval_covers_the_statistic_and_shrinks_with_samples():
    rng = random.Random(1)
    small = [rng.gauss(10, 2) for _ in range(20)]
    large = [rng.gauss(10, 2) for _ in range(400)]
    mean = lambda columns: statistics.fmean(columns[0])  # noqa: E731
    low_small, high_small = bootstrap_ci([small], mean)
    low_large, high_large = bootstrap_ci([large], mean)
    assert low_small < statistics.fmean(small) < high_small
    assert low_large < statistics.fmean(large) < high_large
    assert high_large - low_large < high_small - low_small
    assert bootstrap_ci([[3.0] * 10], mean) == (3.0, 3.0)


def test_bootstrap_resamples_paired_columns_together():
    base = [float(i) for i in range(1, 31)]
    doubled = [2 * v for v in base]  # every pair has ratio exactly 2
    ratio = lambda c: statistics.fmean(c[1]) / statistics.fmean(c[0])  # noqa: E731
    assert bootstrap_ci([base, doubled], ratio) == (2.0, 2.0)


def test_passkey_prompt_states_the_key_once_inside_held_out_text(tiny_llama: ModelFolder):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama.path))
    texts = [f"Paragraph {i} says words about modules and functions." * 3 for i in range(5)]
    ids, key = passkey_prompt(tokenizer, texts, 400, random.Random(0), tag="Request 1.\n")
    text = str(tokenizer.decode(ids))
    assert key.isdigit()
    assert len(key) == 5
    assert text.startswith("Request 1.")
    assert text.count(f"The pass key is {key}.") == 1
    assert text.endswith("What is the pass key? The pass key is")
    assert 350 <= len(ids) <= 420
    start = text.index("The pass key is")
    assert 0.05 * len(text) < start < 0.95 * len(text)


def test_trained_folders_are_reused_only_with_the_same_recipe():
    recipe = RealRecipe()
    run = RUNS["kvp025"]
    settings = {
        "seq_len": 256,
        "batch_size": 4,
        "lr": 1e-3,
        "precision": "bf16",
        "checkpoint_every": 50,
        "eval_batches": 4,
        "seed": 0,
        "prune": 0.25,
        "layer_map": "input",
        "objective": "kvp",
        "data": "/anywhere/train.jsonl",
    }
    training = {"steps": run.steps, "settings": settings}
    assert settings_match(training, recipe, run)
    assert not settings_match({**training, "steps": run.steps - 1}, recipe, run)
    block = {**settings, "layer_map": "block"}
    assert not settings_match({**training, "settings": block}, recipe, run)
    assert not settings_match(training, recipe, RUNS["smaller_model"])
    quick = replace(recipe, step_scale=0.1)
    assert run.steps_for(quick) == round(run.steps / 10)
