"""Errors raised while building the peers' venv or running a peer."""

from __future__ import annotations


class PeerError(Exception):
    """Base class for the benchmark peers' errors."""


class PeerVenvError(PeerError):
    """The separate peers venv could not be built (pip failure, wrong Python, no network)."""


class PeerRunError(PeerError):
    """A peer subprocess failed, timed out, or printed no result line."""
