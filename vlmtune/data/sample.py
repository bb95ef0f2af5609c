"""The one in-memory sample type every reader produces and every template consumes.

    Sample(messages=[Message("user", "<image>\\nWhat is this?"), Message("assistant", "A cat.")],
           images=["cats/1.jpg"], id="a1", index=0, source="data.json", kind="chat")

Image placeholders in `content` are always the literal `<image>`, and `images` lists the raw
path strings from the data in the order their placeholders appear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")
KINDS = ("chat", "caption", "text")
IMAGE_PLACEHOLDER = "<image>"


@dataclass
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass
class Sample:
    messages: list[Message]
    images: list[str] = field(default_factory=list)
    id: str | None = None
    index: int = 0
    source: str = ""
    kind: str = "chat"  # chat | caption | text

    @property
    def num_placeholders(self) -> int:
        return sum(m.content.count(IMAGE_PLACEHOLDER) for m in self.messages)


class RecordProblem(Exception):
    """One record can't be used. `reason` is a stable slug (`missing-image`, `too-long`, ...)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def problem_dict(reason: str, detail: str, *, index: int, id: str | None, source: str) -> dict:
    """The shape every report uses: check's JSON, the dataset's skips, skipped.jsonl."""
    return {"index": index, "id": id, "reason": reason, "detail": detail, "source": source}
