"""Decoding and resizing beyond one interpreter: a `Preprocessor` run in worker processes.

Pillow lets go of the GIL inside its decoders and resamplers, but the Python around them (the
header, EXIF, the chunked load loop, the arrays) holds it, so threads of one process stop
scaling at about four (benchmarks/README.md, "Figures: NVIDIA H200"). Here each image's bytes
go to a worker process, which runs the very same `Preprocessor`: the same pixels, the same
errors, on as many cores as there are workers.

Each worker has a pipe of its own and a slot of shared memory for its pixels: the caller's
thread writes the bytes, the worker writes the pixels into its slot and answers with an empty
message (or the pickled error), and the caller copies the pixels out. That costs the server's
interpreter a tenth of what `ProcessPoolExecutor` does per image (its queues, feeder and
manager threads, pickled results: 0.55 ms of the server's CPU per 640x480 JPEG), which is what
a server at thousands of images per second cannot spend.

Regions (`Crop`) stay in the calling process, where one decode of an image serves all the
regions cut from it. A worker that dies (killed, or a crash inside a decoder) costs only the
image it held: a new worker takes its place and the image is tried once more; an image on
which a worker dies twice is refused as one the decoder cannot read.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import pickle
import queue
import signal
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from lookalike.server.embed.preprocess import Crop, ImageInput, Preprocessor
from lookalike.server.errors import EngineError, InvalidArgumentError, InvalidImageError

__all__ = ["ProcessPreprocessor"]

log = logging.getLogger(__name__)

TRIES = 2  # a worker dying on an image costs it one more try, on a new worker
READY = b""  # a worker's answer: started, or the pixels are in its slot
STOP_TIMEOUT_S = 10.0


@dataclasses.dataclass
class _Worker:
    slot: int
    process: BaseProcess
    connection: Connection


class ProcessPreprocessor:
    """`bytes -> pixels` as `preprocessor` makes them, in `processes` worker processes.

    Blocking and thread-safe: call it from at least `processes` threads to keep every worker
    busy (more callers wait for a free worker).
    """

    def __init__(self, preprocessor: Preprocessor, processes: int) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.preprocessor, self.processes = preprocessor, processes
        self._context = multiprocessing.get_context("spawn")  # forking threads is unsafe
        blank = preprocessor.blank()
        self._memory = SharedMemory(create=True, size=blank.nbytes * processes)
        self._pixels = np.ndarray((processes, *blank.shape), blank.dtype, buffer=self._memory.buf)
        self._lock = threading.Lock()  # guards the workers list against concurrent restarts
        self._closed = False
        self.restarts = 0  # workers replaced after one died
        self._workers = [self._spawn(slot) for slot in range(processes)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for worker in self._workers:
            self._idle.put(worker)
        try:
            for worker in self._workers:
                self._wait_until_ready(worker)
        except EngineError:
            self.close()  # the workers that did start, and the shared memory, go too
            raise

    def __call__(self, data: ImageInput) -> np.ndarray:
        if isinstance(data, Crop):
            return self.preprocessor(data)
        worker = self._idle.get()
        try:
            if self._closed:
                raise EngineError("server is shutting down")
            for _ in range(TRIES):
                try:
                    worker.connection.send_bytes(data)
                    answer = worker.connection.recv_bytes()
                except (EOFError, OSError):
                    worker = self._replace(worker)
                    continue
                if answer != READY:
                    raise _unpickled(answer)
                return self._pixels[worker.slot].copy()
        finally:
            self._idle.put(worker)
        raise InvalidImageError(
            f"the image decoder's process died twice on this image ({len(data):,} bytes): "
            "a file the decoder cannot read"
        )

    def close(self) -> None:
        """Let the images in flight finish, stop the workers (each exits when its pipe closes)
        and free the shared memory; calls from then on are refused."""
        self._closed = True
        idle = []
        for _ in range(self.processes):
            try:
                idle.append(self._idle.get(timeout=STOP_TIMEOUT_S))
            except queue.Empty:
                break
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.connection.close()
        for worker in workers:
            worker.process.join(STOP_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        for worker in idle:  # callers still waiting for a worker get one, and the refusal
            self._idle.put(worker)
        self._memory.unlink()
        if len(idle) == self.processes:  # else a call still holds a view of the pixels
            del self._pixels
            self._memory.close()

    def _spawn(self, slot: int) -> _Worker:
        ours, theirs = self._context.Pipe()
        blank = self._pixels[slot]
        process = self._context.Process(
            target=_serve,
            args=(theirs, self.preprocessor, self._memory.name, slot, blank.shape, blank.dtype.str),
            name=f"lookalike-preprocess-{slot}",
            daemon=True,
        )
        process.start()
        theirs.close()
        return _Worker(slot, process, ours)

    def _wait_until_ready(self, worker: _Worker) -> None:
        try:
            worker.connection.recv_bytes()
        except (EOFError, OSError) as exc:
            raise EngineError(
                f"a preprocessing process did not start (exit code {worker.process.exitcode}); "
                "see the lines above"
            ) from exc

    def _replace(self, dead: _Worker) -> _Worker:
        """A new worker in the dead one's slot (its pixels are never read)."""
        dead.connection.close()
        dead.process.join(STOP_TIMEOUT_S)
        with self._lock:
            if self._closed:
                raise EngineError("server is shutting down")
            log.warning(
                "preprocessing process %d died (exit code %s); starting another",
                dead.process.pid,
                dead.process.exitcode,
            )
            worker = self._spawn(dead.slot)
            self._workers[dead.slot] = worker
            self.restarts += 1
        self._wait_until_ready(worker)
        return worker


def _unpickled(answer: bytes) -> Exception:
    error = pickle.loads(answer)
    return error if isinstance(error, Exception) else InvalidArgumentError(str(error))


def _serve(
    connection: Connection,
    preprocessor: Preprocessor,
    memory_name: str,
    slot: int,
    shape: tuple[int, ...],
    dtype: str,
) -> None:
    """A worker: preprocess each image sent into this slot until the pipe closes."""
    # the server decides when its workers stop: a Ctrl+C or SIGTERM sent to the whole process
    # group must not end them while the server still drains its requests
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    memory = SharedMemory(name=memory_name)  # the creator's unlink ends it
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pixels = np.ndarray(shape, dtype, buffer=memory.buf, offset=slot * size)
    connection.send_bytes(READY)
    while True:
        try:
            data = connection.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            pixels[...] = preprocessor(data)
            answer = READY
        except Exception as error:
            answer = _pickled(error)
        connection.send_bytes(answer)


def _pickled(error: Exception) -> bytes:
    try:
        return pickle.dumps(error)
    except Exception:  # an error that does not pickle: say what it was
        return pickle.dumps(InvalidArgumentError(f"{type(error).__name__}: {error}"))
