"""A typed Python client for Lookalike (`api`, `errors`), and what its users and the `lookalike`
commands (in `lookalike.cli`) share: image files and their ids (`files`), near-duplicate groups
and calibration (`duplicates`), the HTML pages of results (`report`)."""

from lookalike.client.api import (
    AddOutcome,
    Client,
    Deleted,
    Example,
    Item,
    Match,
    NewItem,
    Region,
    Stats,
)
from lookalike.client.errors import (
    InvalidRequestError,
    ItemNotFoundError,
    LookalikeClientError,
    ServerOverloadedError,
    ServerUnavailableError,
    UnauthenticatedError,
)

__all__ = [
    "Client",
    "Match",
    "Item",
    "NewItem",
    "Region",
    "Example",
    "AddOutcome",
    "Deleted",
    "Stats",
    "LookalikeClientError",
    "InvalidRequestError",
    "ItemNotFoundError",
    "ServerUnavailableError",
    "UnauthenticatedError",
    "ServerOverloadedError",
]
