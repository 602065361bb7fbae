"""Widgets of the llmobs-tui screens."""
