"""Argument types for the parser: each turns a flag's text into a checked value, or raises
`argparse.ArgumentTypeError` with the reason, so that argparse prints `error: argument --x: …` and
exits 2 before any command runs."""

from __future__ import annotations

import argparse

from llmobs_tui.config import parse_duration, parse_size


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from exc
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0–65535; 0 picks a free port)")
    return value


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def db_size(text: str) -> int:
    from store.disk_budget import MIN_LIMIT

    value = size(text)
    if value < MIN_LIMIT:
        raise argparse.ArgumentTypeError(f"{text}: the store needs at least {MIN_LIMIT >> 20}MB")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def row_limit(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1")
    return value


def trace_sort(text: str) -> str:
    from store.dashboards import TRACE_SORTS

    if text not in TRACE_SORTS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sort; choose from {', '.join(TRACE_SORTS)}")
    return text


def forward_endpoint(text: str) -> str:
    from receiver.forward import Endpoint, ForwardEndpointError

    try:
        Endpoint.parse(text)
    except ForwardEndpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def nonempty(text: str) -> str:
    """An id to act on: blank would match the spans that name none."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an id is required (it was empty)")
    return text
