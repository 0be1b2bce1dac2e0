"""A typed Python client for Lookalike, and the `lookalike` command line."""

from lookalike.client.api import AddOutcome, Client, Deleted, Item, Match, NewItem, Stats
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
