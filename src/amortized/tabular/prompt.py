"""The MachineLearningLM evaluation prompt, byte for byte (see docs/tabular.md).

Trailing double spaces and the two blank lines before ``[Training set]`` are part of the
format the released checkpoint was evaluated with; keep them.
"""

from collections.abc import Sequence

SYSTEM_PROMPT = "You are an AI assistant. Your task is supervised classification."


def user_prompt(
    feature_count: int,
    label_set: Sequence[int],
    train_lines: Sequence[str],
    queries: Sequence[str],
) -> str:
    """The user message: data description, demonstrations, test rows, output rules."""
    labels = "[" + ", ".join(str(label) for label in label_set) + "]"
    parts = [
        "",
        "[Data]",
        f"• Each sample = {feature_count} features + 1 label.  Label set = {labels}.  ",
        '• Features in a row are comma-separated.  Features and label are separated by "|".',
        "",
        "",
        "[Training set]  (order of rows does NOT matter)  ",
        f"{len(train_lines)} rows:  ",
        *train_lines,
        "",
        "[Test set]  (keep original order!)  ",
        "Each row = ID, then N features (ID is NOT a feature).  ",
        f"{len(queries)} rows:  ",
        *queries,
        "",
        "[Output requirements]",
        "Return **only** a JSON array.",
        'Each element: {"id": <ID>, "label": <predicted_label>}',
        "",
        "Begin when ready. Do not output anything except the JSON array.",
        "",
    ]
    return "\n".join(parts)


def demonstration_lines(rows: Sequence[str], labels: Sequence[int]) -> list[str]:
    return [f"{row}|{label}" for row, label in zip(rows, labels, strict=True)]


def query_lines(rows: Sequence[str]) -> list[str]:
    """``ID i:v1,...`` with ids from 0 within each prompt."""
    return [f"ID {i}:{row}" for i, row in enumerate(rows)]


def raw_prompt(user: str, system: str = SYSTEM_PROMPT) -> str:
    """System and user as one text, as the reference evaluation sends it (no chat template)."""
    return f"{system}\n{user}" if system else user


def chat_messages(user: str, system: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The same as chat messages, for the model's chat template (how it was trained)."""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def answer_element(row: int, label: int | str) -> str:
    """One element of the answer array, spaced as the reference writes it."""
    return f'{{"id": {row}, "label": {label}}}'


def answer_text(labels: Sequence[int]) -> str:
    """The whole answer array for ``labels`` in row order (what a perfect model writes)."""
    return "[" + ", ".join(answer_element(i, label) for i, label in enumerate(labels)) + "]"


def answer_regex(rows: int, label_set: Sequence[int]) -> str:
    """The answer in the reference's exact layout, ids in order: always parses, whatever
    whitespace habits the model or the grammar backend has."""
    labels = "|".join(str(label) for label in sorted(label_set, key=lambda v: -len(str(v))))
    items = ", ".join(f'\\{{"id": {i}, "label": ({labels})\\}}' for i in range(rows))
    return f"\\[{items}\\]"


def answer_schema(rows: int, label_set: Sequence[int]) -> dict[str, object]:
    """JSON schema of the answer for guided decoding: exactly ``rows`` objects, known labels."""
    return {
        "type": "array",
        "minItems": rows,
        "maxItems": rows,
        "items": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 0, "maximum": max(rows - 1, 0)},
                "label": {"type": "integer", "enum": list(label_set)},
            },
            "required": ["id", "label"],
            "additionalProperties": False,
        },
    }
