"""Which copy of a group of near-duplicates to keep, by a stated rule, and the plan that keeps
it and deletes the rest.

The web app's duplicates review applies the same rules (`KEEP_RULES` in
server/http/static/app.js), and a test checks that both keep the same copies. Copies whose
image size the server did not record (added as vectors, or stored before it recorded sizes)
come last under every size rule; ties go to the first id, so a group always keeps the same
copy.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

from lookalike.client.api import ImageFacts
from lookalike.client.duplicates import DuplicateGroup

__all__ = ["KeepRule", "kept_copy", "GroupPlan", "keep_plan"]


class KeepRule(str, enum.Enum):
    LARGEST = "largest"  # most pixels, then the largest file
    SMALLEST = "smallest"  # the smallest file, then most pixels
    FIRST = "first"  # the first id in alphabetical order

    @property
    def description(self) -> str:
        return {
            KeepRule.LARGEST: "the largest image: most pixels, then the largest file",
            KeepRule.SMALLEST: "the smallest file",
            KeepRule.FIRST: "the first id in alphabetical order",
        }[self]


def kept_copy(ids: Sequence[str], images: Mapping[str, ImageFacts], rule: KeepRule) -> str:
    """The id of the copy `rule` keeps among `ids`."""

    def rank(item_id: str) -> tuple:
        image = images.get(item_id)
        if rule is KeepRule.FIRST:
            return (item_id,)
        if image is None:
            return (1, 0, 0, item_id)
        if rule is KeepRule.LARGEST:
            return (0, -image.pixels, -image.bytes, item_id)
        return (0, image.bytes, -image.pixels, item_id)

    return min(ids, key=rank)


@dataclasses.dataclass(frozen=True)
class GroupPlan:
    keep: str
    delete: list[str]  # the group's other copies, in id order


def keep_plan(
    groups: Sequence[DuplicateGroup], images: Mapping[str, ImageFacts], rule: KeepRule
) -> list[GroupPlan]:
    """For each group: the copy `rule` keeps and the copies to delete."""
    plans = []
    for group in groups:
        keep = kept_copy(group.ids, images, rule)
        plans.append(GroupPlan(keep, [item_id for item_id in group.ids if item_id != keep]))
    return plans
