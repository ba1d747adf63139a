"""The `saga` command: one console script for every process and operator tool."""

__all__: list[str] = []
