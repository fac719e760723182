"""The default CPU thread count leaves busy cores alone and splits among torchrun processes."""

from __future__ import annotations

from domadapt import threads


def test_default_threads_subtracts_busy_cores_and_splits_among_processes(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads.default_threads() == 6
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.default_threads() == 3
    monkeypatch.setattr(threads, "busy_cores", lambda: 9)
    assert threads.default_threads() == 1
    assert threads.resolve_threads(5) == 5
