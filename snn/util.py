"""Small shared helpers: atomic file writes, an exclusive file lock, progress on stderr, a
cache of what is made once per network."""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, Hashable, Iterable, Iterator, Sized, TypeVar

T = TypeVar("T")


def made_once(cache: dict, key: Hashable, owner: object, make: Callable[[], T], keep: int = 4) -> T:
    """``make()``'s value for ``owner`` (a network's graph) under ``key`` in ``cache``: made once
    and reused while it is among the last ``keep`` entries. The entry holds ``owner``, so its
    ``id`` (part of a key) cannot be reused by another object meanwhile. Like everything made
    from a graph, it assumes the graph's arrays are not changed in place."""
    hit = cache.get(key)
    if hit is None or hit[0] is not owner:
        if len(cache) >= keep:
            cache.pop(next(iter(cache)))
        hit = cache[key] = (owner, make())
    return hit[1]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted or failed write leaves ``path`` untouched (or absent) and no partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed), held for the block: concurrent
    processes that need the same result wait for the first one instead of computing it twice."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- progress
def interactive(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal: progress bars redraw in place
    there; written to a file or a pipe, progress is plain lines (no carriage returns)."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None,
             enabled: bool = True, lines: int = 4) -> Iterator[T]:
    """Iterate ``items`` with progress on stderr: a tqdm bar on a terminal, else about
    ``lines`` plain lines (``desc: k/n unit, t s``) and a last one, so a log file stays
    readable. ``enabled=False``: silent."""
    if not enabled:
        yield from items
        return
    if total is None:
        total = len(items) if isinstance(items, Sized) else None
    if interactive():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit=unit, total=total)
        return
    t0, every = time.perf_counter(), max(1, (total or 0) // max(1, lines))
    k = 0
    for k, item in enumerate(items, 1):
        yield item
        if k % every == 0 or k == total:
            print(f"{desc}: {k}/{total if total is not None else '?'} {unit}, {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)


@contextlib.contextmanager
def activity(message: str, done: str = "done", enabled: bool = True) -> Iterator[dict[str, float]]:
    """Say ``message`` on stderr while the block runs (with a seconds counter on a
    terminal), then ``message: done in t s``. Yields a dict whose ``seconds`` is set on exit."""
    out: dict[str, float] = {}
    if not enabled:
        t0 = time.perf_counter()
        yield out
        out["seconds"] = time.perf_counter() - t0
        return
    import threading

    stop = threading.Event()
    t0 = time.perf_counter()
    tty = interactive()
    print(f"{message} ...", file=sys.stderr, end="" if tty else "\n", flush=True)

    def tick() -> None:
        while not stop.wait(1.0):
            print(f"\r{message} ... {time.perf_counter() - t0:.0f} s", file=sys.stderr, end="", flush=True)

    ticker = threading.Thread(target=tick, daemon=True) if tty else None
    if ticker:
        ticker.start()
    ok = False
    try:
        yield out
        ok = True
    finally:
        stop.set()
        if ticker:
            ticker.join()
        out["seconds"] = time.perf_counter() - t0
        print(("\r" if tty else "") + f"{message}: {done if ok else 'failed'} in {out['seconds']:.1f} s",
              file=sys.stderr, flush=True)
