"""Store backends and framework integrations, installed as ``colbert_store.adapters``.

Each module imports its third-party library itself, so nothing here is loaded until it is used.
"""
