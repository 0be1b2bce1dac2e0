"""A typed Python client for Lookalike, and the `lookalike` command line."""

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
