"""Offline tools over a store, through the Store protocol (no Flask here): copy between backends."""
