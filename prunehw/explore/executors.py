"""Executors: the tasks on Ray (dependencies as ObjectRefs), or one after another in this process."""

from __future__ import annotations

import functools
import os
import time

from prunehw.core.errors import PrunehwError

from .tasks import SINGLE_THREAD_ENV


class _Thunk:
    """A task of the serial executor: run on first need, its value (or error) kept."""

    def __init__(self, fn=None, args=(), kwargs=None, value=None, done=False):
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}
        self.value, self.error, self.done = value, None, done


class _SerialExecutor:
    """Runs tasks lazily in submission order, in this process, with the same retries as Ray."""

    cpus = 1

    def __init__(self, retries: int):
        self.retries = retries
        self.running = 0
        self._busy: dict[str, list] = {}

    def task_seconds(self) -> dict[str, dict]:
        """Per task function: how many ran and their summed wall time (attempts included)."""
        return {k: {"tasks": n, "seconds": round(t, 2)} for k, (n, t) in self._busy.items()}

    def submit(self, fn, *args, **kwargs) -> _Thunk:
        return _Thunk(fn, args, kwargs)

    def put(self, value) -> _Thunk:
        return _Thunk(value=value, done=True)

    def get(self, h: _Thunk):
        self._resolve(h)
        if h.error is not None:
            raise h.error
        return h.value

    def _resolve(self, h: _Thunk) -> None:
        if h.done:
            return
        h.done = True
        args = []
        for a in h.args:
            if isinstance(a, _Thunk):
                self._resolve(a)
                if a.error is not None:
                    h.error = a.error
                    return
                a = a.value
            args.append(a)
        import contextlib

        for _ in range(self.retries + 1):
            self.running = 1
            # the task's own progress bars and logs go nowhere, as in a Ray worker; the sweep's bar keeps its stream
            t0 = time.perf_counter()
            with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), contextlib.redirect_stdout(null):
                try:
                    h.value, h.error = h.fn(*args, **h.kwargs), None
                    break
                except PrunehwError as exc:  # a deterministic input error: retrying cannot help
                    h.error = exc
                    break
                except Exception as exc:  # noqa: BLE001 - reported per point, the sweep goes on
                    h.error = exc
                finally:
                    self.running = 0
                    n, t = self._busy.get(h.fn.__name__, (0, 0.0))
                    self._busy[h.fn.__name__] = (n + 1, t + time.perf_counter() - t0)

    def as_completed(self, handles, tick=None):
        for h in handles:
            self._resolve(h)
            yield h, h.error is None, h.value if h.error is None else h.error

    def shutdown(self):
        pass


class _RayExecutor:
    """Tasks as Ray remote functions; dependencies passed as ObjectRefs, so each shared stage runs once."""

    def __init__(self, retries: int, address: str | None, workers: int | None):
        import ray

        self.ray = ray
        env = {**SINGLE_THREAD_ENV, "RAY_DEDUP_LOGS": "0"}
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env}, configure_logging=True, logging_level="ERROR")
        self.cpus = int(ray.cluster_resources().get("CPU", 1))
        self.retries = retries
        self._remote = {}
        self.board = _board_actor(ray).remote()

    def submit(self, fn, *args, **kwargs):
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(max_retries=self.retries, retry_exceptions=True)(_tracked)
        return self._remote[fn].remote(self.board, fn, *args, **kwargs)

    def put(self, value):
        return self.ray.put(value)

    def get(self, ref):
        return self.ray.get(ref)

    @property
    def running(self) -> int:
        return self.ray.get(self.board.running.remote())

    def task_seconds(self) -> dict[str, dict]:
        return self.ray.get(self.board.seconds.remote())

    def as_completed(self, handles, tick=None):
        pending = list(handles)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1, timeout=1.0)
            if tick:
                tick()
            for ref in done:
                try:
                    yield ref, True, self.ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the task's exception
                    yield ref, False, getattr(exc, "cause", None) or exc

    def shutdown(self):
        self.ray.shutdown()


def _tracked(board, fn, *args, **kwargs):
    """Run ``fn`` in a Ray worker, telling the progress board it runs (for the live 'running' count)."""
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    board.started.remote(token)
    t0 = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        board.finished.remote(token, fn.__name__, time.perf_counter() - t0)


@functools.lru_cache(maxsize=1)
def _board_actor(ray):
    @ray.remote(num_cpus=0)
    class Board:
        def __init__(self):
            self.active = set()
            self.busy = {}

        def started(self, token):
            self.active.add(token)

        def finished(self, token, name, seconds):
            self.active.discard(token)
            n, t = self.busy.get(name, (0, 0.0))
            self.busy[name] = (n + 1, t + seconds)

        def seconds(self):
            return {k: {"tasks": n, "seconds": round(t, 2)} for k, (n, t) in self.busy.items()}

        def running(self):
            return len(self.active)

    return Board
