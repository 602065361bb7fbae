"""Serve's children started as plain subprocesses (receiver/child_process.py): frames both ways, exit
codes, no stray process, and the parent's packages rather than the working directory's."""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path

import psutil
import pytest

from receiver.child_process import ChildProcess
from tests.test_durability import start_serve, wait_for


def echo_child(inbox: Connection, outbox: Connection, options: dict) -> None:
    """Runs in the child: answers each frame with the prefix from its options, and reports where its
    `store` package came from and which file descriptors it holds."""
    import store

    open_fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else []
    outbox.send((store.__file__, open_fds, os.environ.get("LLMOBS_CHILD_TEST")))
    while True:
        try:
            frame = inbox.recv_bytes()
        except EOFError:
            return
        if frame == b"exit 3":
            sys.exit(3)
        outbox.send_bytes(options["prefix"] + frame)


def test_a_child_gets_its_options_answers_frames_and_stops_at_eof(tmp_path, monkeypatch):
    # A `store` package in the working directory must not replace ours in the child.
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "__init__.py").write_text("raise ImportError('the working directory shadowed store')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMOBS_CHILD_TEST", "inherited")
    child = ChildProcess("llmobs-test", echo_child, {"prefix": b"> "})
    try:
        store_file, fds, env_value = child.from_child.recv()
        assert Path(store_file).resolve().parent == Path(__file__).resolve().parent.parent / "store"
        assert env_value == "inherited"
        if fds:  # stdin, stdout, stderr, its two pipe ends and the directory listing's own
            assert len(fds) <= 6, fds
        child.to_child.send_bytes(b"one")
        child.to_child.send_bytes(b"two")
        assert child.from_child.recv_bytes() == b"> one"
        assert child.from_child.recv_bytes() == b"> two"
        assert child.is_alive()
        child.to_child.close()  # EOF: the child returns
        child.join(30)
        assert child.exitcode == 0
    finally:
        child.kill()
        child.join(5)


def test_a_childs_exit_code_and_death_reach_the_parent():
    child = ChildProcess("llmobs-test", echo_child, {"prefix": b""})
    child.from_child.recv()
    child.to_child.send_bytes(b"exit 3")
    with pytest.raises(EOFError):
        child.from_child.recv_bytes()
    child.join(30)
    assert child.exitcode == 3 and not child.is_alive()

    killed = ChildProcess("llmobs-test", echo_child, {"prefix": b""})
    killed.from_child.recv()
    killed.kill()
    killed.join(30)
    assert killed.exitcode == -signal.SIGKILL


def test_serve_runs_no_process_but_its_writer_and_decoders(tmp_path):
    proc, _ = start_serve(tmp_path / "tree.db", "--decoders", "2")
    try:
        def children() -> list[str]:
            return [" ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)]

        wait_for(lambda: len(children()) >= 3)
        found = children()
        assert len(found) == 3, found  # multiprocessing's resource tracker would be a fourth
        assert sorted(cmd.split()[-3] for cmd in found) == ["llmobs-decoder-0", "llmobs-decoder-1", "llmobs-writer"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
