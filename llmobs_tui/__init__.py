"""llmobs-tui: htop for LLM applications. Importing the package loads no Textual."""

__version__ = "0.1.0"
