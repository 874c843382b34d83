from amortized.models.tokenizer import IM_END, IM_START, MARKUP_TOKENS, train_tokenizer

TEXTS = ["hello world", "the opposite of hot is cold", "count from 1 to 5"] * 20


def test_byte_level_tokenizer_round_trips_unseen_text():
    tok = train_tokenizer(TEXTS, vocab_size=320)
    text = 'Grüße, 東京! {"id": 3} \t tabs'
    assert tok.decode(tok.encode(text)) == text


def test_split_digits_gives_every_digit_its_own_token():
    texts = [f"row {n}: {n * 7},{n * 13}" for n in range(200)]
    merged = train_tokenizer(texts, vocab_size=400)
    split = train_tokenizer(texts, vocab_size=400, split_digits=True)
    text = "ID 17: 512,473"
    pieces = [split.decode([i]) for i in split.encode(text)]
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("17512473")
    assert split.decode(split.encode(text)) == text
    assert len(merged.encode(text)) < len(split.encode(text))


def test_markup_tokens_are_single_tokens_and_visible():
    tok = train_tokenizer(TEXTS, vocab_size=320)
    for token in MARKUP_TOKENS:
        ids = tok.encode(token)
        assert len(ids) == 1
        assert tok.decode(ids, skip_special_tokens=True) == token


def test_chat_template_renders_chatml_with_generation_prompt():
    tok = train_tokenizer(TEXTS, vocab_size=320)
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == (
        f"{IM_START}system\nBe brief.{IM_END}\n{IM_START}user\nHi{IM_END}\n{IM_START}assistant\n"
    )


def test_chat_template_renders_tools_and_tool_results():
    tok = train_tokenizer(TEXTS, vocab_size=320)
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    messages = [
        {"role": "user", "content": "add 1 and 2"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
            ],
        },
        {"role": "tool", "content": "3"},
    ]
    text = tok.apply_chat_template(messages, tools=[tool], tokenize=False)  # type: ignore[arg-type]
    assert '"name": "add"' in text
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>' in text
    assert "<tool_response>\n3\n</tool_response>" in text
