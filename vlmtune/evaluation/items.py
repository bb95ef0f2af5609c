"""The one question type every benchmark reader produces and the generation engine consumes.

    item = EvalItem(id="1000012", prompt="<image>\\nWhat is shown?\\nA. cat\\nB. dog\\n...",
                    question="What is shown?", images=[ImageRef(base64=..., where="x.tsv line 5 ...")],
                    meta={"answer": "A", ...})
    item.load_images()      # [PIL RGB], or a DataError naming the file, row and column

`id` is unique within one benchmark file and is what a predictions file refers to.
`question` is the question's own text, used to tell whether a predictions file belongs to this data.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from vlmtune.data.sample import RecordProblem
from vlmtune.errors import DataError


@dataclass
class ImageRef:
    """An image to decode when needed: a base64 string (MMBench) or a path already resolved."""

    where: str  # for messages: "MMBench_DEV_EN.tsv line 5 (index 3), column `image`"
    base64: str | None = None
    path: str | None = None

    def data(self) -> bytes | str:
        if self.path is not None:
            return self.path
        text = "".join((self.base64 or "").split())
        text += "=" * (-len(text) % 4)  # some writers drop the padding
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise DataError(f"{self.where}: not decodable base64 ({e}).") from None

    def load(self):
        from vlmtune.data.images import load_image

        try:
            return load_image(self.data())
        except RecordProblem as e:
            raise DataError(f"{self.where}: {e.detail or e.reason}") from None


@dataclass
class EvalItem:
    id: str
    prompt: str  # the user turn, `<image>` placeholders included
    question: str
    images: list[ImageRef] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def load_images(self) -> list:
        return [ref.load() for ref in self.images]
