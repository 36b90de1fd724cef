"""A local model server for SageMaker scikit-learn model artifacts, speaking the container contract.

The artifact is laid out as SageMaker's scikit-learn serving container expects it in /opt/ml/model:
a serialized model (model.joblib, or model.pkl / model.pickle, loaded with joblib) and optionally
`code/inference.py` defining any of `model_fn(model_dir)`, `input_fn(body, content_type)`,
`predict_fn(data, model)`, `output_fn(prediction, accept)`. Each hook is used when present and a
default otherwise. As in that container, `input_fn` gets text for CSV and JSON bodies and bytes
otherwise, and one request (a whole mini-batch) is one `predict_fn` call.

HTTP: GET /ping (200 once the model is loaded, 503 before), POST /invocations (Content-Type and
Accept headers; any error is a 500 with the message, and is logged), GET /execution-parameters
(the JSON given with --execution-parameters, else 404). Binds the loopback interface only.

    python -m steps.model_server --model model.tar.gz --port 8080 [--host 127.0.0.1]
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import csv
import dataclasses
import errno
import http.client
import importlib.util
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import traceback
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from analysis.dataprocessing import write_csv_row
from analysis.records import media_type

log = logging.getLogger("shadow_eval.model_server")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MODEL_FILES = ("model.joblib", "model.pkl", "model.pickle")
TEXT_TYPES = {"text/csv", "application/json", "application/jsonlines", "application/x-jsonlines"}
EXIT_ADDRESS_IN_USE = 3
SCRATCH_PREFIX = "shadow-eval-model-"
"""Temporary model folders are `<tmp>/shadow-eval-model-<owner pid>-<random>`."""
PR_SET_PDEATHSIG = 1
_REPO_ROOT = Path(__file__).resolve().parent.parent


class ModelArtifactError(ValueError):
    """A model artifact that cannot be unpacked or loaded."""


class ModelServerError(RuntimeError):
    """The model server process did not become healthy."""


# ---- default hooks, as the scikit-learn serving container behaves ----

def default_model_fn(model_dir: str) -> Any:
    """Load the first of model.joblib, model.pkl, model.pickle with joblib."""
    for name in MODEL_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            return joblib.load(path)
    present = sorted(p.name for p in Path(model_dir).iterdir())
    raise ModelArtifactError(f"no {' / '.join(MODEL_FILES)} in the model folder (found: "
                             f"{', '.join(present) or 'nothing'}); add one or define model_fn in code/inference.py")


def default_input_fn(body: str | bytes, content_type: str) -> np.ndarray:
    """A 2-D float array: CSV rows, JSON `{"instances": [...]}` or a list, or one JSON Lines row per line."""
    kind = media_type(content_type)
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if kind == "text/csv":
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    elif kind == "application/json":
        document = json.loads(text)
        if isinstance(document, dict) and "instances" in document:
            document = document["instances"]
        if not isinstance(document, list):
            raise ValueError('a JSON body must be {"instances": [...]} or a list of rows')
        rows = [_row(item) for item in document]
        if rows and not isinstance(document[0], (list, dict)):
            rows = [document]  # a flat list of numbers is one row
    elif kind in ("application/jsonlines", "application/x-jsonlines"):
        rows = [_row(json.loads(line)) for line in text.splitlines() if line.strip()]
    else:
        raise ValueError(f"unsupported content type {content_type!r} (text/csv, application/json, "
                         "application/jsonlines)")
    if not rows:
        raise ValueError("the request has no records")
    return np.array(rows, dtype=float).reshape(len(rows), -1)


def default_predict_fn(data: Any, model: Any) -> Any:
    """`model.predict(data)`: one vectorised call for the whole request."""
    return model.predict(data)


def default_output_fn(prediction: Any, accept: str) -> str:
    """CSV one line per row, a JSON list, or one JSON value per line, by Accept."""
    rows = prediction.tolist() if hasattr(prediction, "tolist") else prediction
    kind = media_type(accept)
    if kind in ("text/csv", "application/jsonlines", "application/x-jsonlines") and not isinstance(rows, list):
        raise ValueError(f"{accept} output needs one prediction per row, got {type(rows).__name__}")
    if kind == "text/csv":
        return "".join(write_csv_row(row if isinstance(row, list) else [row]) + "\n" for row in rows)
    if kind == "application/json":
        return json.dumps(rows)
    if kind in ("application/jsonlines", "application/x-jsonlines"):
        return "".join(json.dumps(row) + "\n" for row in rows)
    raise ValueError(f"unsupported Accept {accept!r} (text/csv, application/json, application/jsonlines)")


def _row(item: Any) -> Any:
    if isinstance(item, dict):
        if "features" not in item:
            raise ValueError('a JSON record must be a list of numbers or an object with "features"')
        return item["features"]
    return item


@dataclasses.dataclass(frozen=True)
class Handlers:
    """The four serving hooks, from code/inference.py where defined."""

    model_fn: Callable[[str], Any] = default_model_fn
    input_fn: Callable[[Any, str], Any] = default_input_fn
    predict_fn: Callable[[Any, Any], Any] = default_predict_fn
    output_fn: Callable[[Any, str], Any] = default_output_fn


def load_handlers(model_dir: Path) -> Handlers:
    """The hooks of `<model_dir>/code/inference.py` (when present) over the defaults."""
    script = model_dir / "code" / "inference.py"
    if not script.is_file():
        return Handlers()
    # As in the serving container, the code folder is importable so inference.py can import its siblings.
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location("inference", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = {name: getattr(module, name) for name in ("model_fn", "input_fn", "predict_fn", "output_fn")
             if callable(getattr(module, name, None))}
    log.info("code/inference.py defines %s", ", ".join(found) or "no hooks")
    return Handlers(**found)


# ---- the HTTP server ----

class ModelServer(ThreadingHTTPServer):
    """Serves one model folder; loads it in the background so /ping can answer 503 meanwhile."""

    daemon_threads = True

    def __init__(self, model_dir: Path, host: str, port: int, execution_parameters: dict | None):
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the model server binds the loopback interface only, not {host!r}")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), InvocationHandler)
        self.model_dir = model_dir
        self.execution_parameters = execution_parameters
        self.default_accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json")
        self.handlers: Handlers | None = None
        self.model: Any = None
        self.load_error: BaseException | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def load(self) -> None:
        """Import the hooks and load the model; /ping turns 200 afterwards."""
        try:
            handlers = load_handlers(self.model_dir)
            self.model = handlers.model_fn(str(self.model_dir))
            self.handlers = handlers
            log.info("model loaded from %s", self.model_dir)
        except BaseException as exc:  # noqa: BLE001 - any failure here means the container is unhealthy
            self.load_error = exc
            log.exception("loading the model from %s failed", self.model_dir)

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        """One request through input_fn -> predict_fn -> output_fn; returns the body and its type."""
        handlers = self.handlers
        payload: str | bytes = body.decode("utf-8") if media_type(content_type) in TEXT_TYPES else body
        data = handlers.input_fn(payload, content_type)
        prediction = handlers.predict_fn(data, self.model)
        result = handlers.output_fn(prediction, accept)
        if isinstance(result, tuple):
            result, accept = result
        return (result.encode("utf-8") if isinstance(result, str) else bytes(result)), accept


class InvocationHandler(BaseHTTPRequestHandler):
    """The container contract: /ping, /invocations, /execution-parameters."""

    protocol_version = "HTTP/1.1"
    server: ModelServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/ping":
            self._reply(200 if self.server.handlers else 503, b"")
        elif self.path == "/execution-parameters" and self.server.execution_parameters is not None:
            self._reply(200, json.dumps(self.server.execution_parameters).encode(), "application/json")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, b"Content-Length is required\n", "text/plain")
            return
        body = self.rfile.read(int(length))
        if self.path != "/invocations":
            self._reply(404, b"not found\n", "text/plain")
            return
        if not self.server.handlers:
            self._reply(503, b"the model is not loaded\n", "text/plain")
            return
        content_type = self.headers.get("Content-Type") or "application/json"
        accept = self.headers.get("Accept") or "*/*"
        if accept.strip() in ("*/*", ""):
            accept = self.server.default_accept
        try:
            answer, answer_type = self.server.invoke(body, content_type, accept)
        except Exception as exc:  # noqa: BLE001 - the contract turns any model error into a 500
            # The message can quote the payload (personal data): the log gets the type and where it was raised.
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            log.error("invocation failed (%s -> %s, %d bytes): %s at %s", content_type, accept, len(body),
                      type(exc).__name__, f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?")
            self._reply(500, f"{type(exc).__name__}: {exc}\n".encode(), "text/plain")
            return
        self._reply(200, answer, answer_type)

    def _reply(self, status: int, body: bytes, content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)


def create_server(model_dir: Path, host: str = "127.0.0.1", port: int = 0,
                  execution_parameters: dict | None = None) -> ModelServer:
    """A bound (not yet serving, not yet loaded) server for an unpacked model folder."""
    return ModelServer(Path(model_dir), host, port, execution_parameters)


# ---- artifacts ----

def extract_model(archive: Path, into: Path) -> Path:
    """Unpack a model.tar.gz like SageMaker does into /opt/ml/model; members may not escape `into`."""
    into = into.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                target = (into / member.name).resolve()
                if member.name.startswith("/") or not target.is_relative_to(into):
                    raise ModelArtifactError(f"{archive}: member {member.name!r} would land outside the model folder")
                if member.issym() or member.islnk():
                    # Symlinks resolve from their own folder, hard links from the archive root.
                    base = target.parent if member.issym() else into
                    if not (base / member.linkname).resolve().is_relative_to(into):
                        raise ModelArtifactError(f"{archive}: link {member.name!r} points outside the model folder")
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # a cut-off gzip stream raises the last two
        raise ModelArtifactError(f"{archive}: not a readable tar.gz model artifact ({type(exc).__name__}: {exc}); "
                                 "it may be truncated: copy or build it again (tar -tzf checks it)") from None
    return into


@contextlib.contextmanager
def model_folder(model: str | Path) -> Iterator[Path]:
    """An unpacked model folder: the folder itself, or a temporary extraction of a tar.gz (removed after)."""
    path = Path(model)
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise ModelArtifactError(f"{path}: no such model artifact (a model.tar.gz or an unpacked folder)")
    scratch = scratch_folder()
    try:
        yield extract_model(path, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def scratch_folder() -> Path:
    """A new temporary folder named after this process, so a later run can tell when its owner is dead."""
    sweep_stale_folders()
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))


def sweep_stale_folders(parent: str | Path | None = None) -> list[Path]:
    """Remove model folders left by processes that died without cleaning up (kill -9); returns them."""
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        owner = _scratch_owner(folder)
        if owner is None or _alive(owner):
            continue
        try:
            if folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == os.getuid():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:
            continue
    if removed:
        log.info("removed %d model folders left by processes that are gone", len(removed))
    return removed


def _scratch_owner(folder: Path) -> int | None:
    pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies; exit now if the parent is already gone.

    Called first thing in the server process (not in a preexec_fn, which is unsafe with threads); the
    getppid check after prctl closes the window in which the parent could die before the request.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog thread still notices
    if os.getppid() != parent_pid:
        log.error("the process that started this model server (pid %d) is gone; exiting", parent_pid)
        raise SystemExit(1)


class ServerUrl(str):
    """The base URL serve_model yields; `pid` is the serving process (steps.invocations reads its peak memory)."""

    pid: int | None = None


@contextlib.contextmanager
def serve_model(model: str | Path, log_path: Path, env: dict | None = None, *,
                execution_parameters: dict | None = None, startup_timeout_s: float = 120.0) -> Iterator[str]:
    """Run a model server subprocess on a free loopback port; yields its base URL, stops it on exit."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with model_folder(model) as folder:
        process_env = {**os.environ, "SAGEMAKER_BATCH": "true", **(env or {})}
        process_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))
        # The server dies with this process (even by kill -9) and then removes the folder it was given,
        # when this process made it; a folder left anyway is swept by the next run (sweep_stale_folders).
        owned = ["--remove-on-exit"] if folder.name.startswith(SCRATCH_PREFIX) else []
        for attempt in range(3):
            port = _free_port()
            command = [sys.executable, "-m", "steps.model_server", "--model", str(folder), "--port", str(port),
                       "--parent-pid", str(os.getpid()), *owned]
            if execution_parameters is not None:
                command += ["--execution-parameters", json.dumps(execution_parameters)]
            with open(log_path, "ab") as log_file:
                process = subprocess.Popen(command, env=process_env, stdout=log_file, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            try:
                if _wait_healthy(process, url, startup_timeout_s, log_path):
                    log.info("model server for %s at %s (pid %d, log %s)", model, url, process.pid, log_path)
                    served = ServerUrl(url)
                    served.pid = process.pid
                    yield served
                    return
                log.warning("port %d was taken; retrying (%d)", port, attempt + 1)
            finally:
                _stop(process)
        raise ModelServerError(f"could not find a free port for the model server; see {log_path}")


def _watch_parent(parent_pid: int, server: ModelServer) -> None:
    """Stop serving once the parent is gone (where prctl is unavailable, or its signal was missed)."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    log.error("the process that started this model server (pid %d) is gone; stopping", parent_pid)
    server.shutdown()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(process: subprocess.Popen, url: str, timeout_s: float, log_path: Path) -> bool:
    """True once /ping answers 200; False if the port was taken; raises if the server dies or stalls."""
    deadline = time.monotonic() + timeout_s
    host, port = url.removeprefix("http://").split(":")
    while time.monotonic() < deadline:
        code = process.poll()
        if code == EXIT_ADDRESS_IN_USE:
            return False
        if code is not None:
            raise ModelServerError(f"the model server exited with status {code} before it was healthy:\n"
                                   f"{_tail(log_path)}")
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return True
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.05)
    raise ModelServerError(f"the model server did not answer /ping with 200 within {timeout_s:g} s:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, as SageMaker stops a container, then kill if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    """Serve a model folder or model.tar.gz until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m steps.model_server", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.tar.gz or an unpacked model folder")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1", choices=LOOPBACK_HOSTS)
    parser.add_argument("--execution-parameters", type=json.loads, default=None,
                        help="JSON served at GET /execution-parameters (default: 404, as if not implemented)")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when this process dies (how shadow-eval starts it)")
    parser.add_argument("--remove-on-exit", action="store_true",
                        help=f"remove the --model folder (a {SCRATCH_PREFIX}* folder) if the parent dies first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _exit_now)  # until the server is up: SIGTERM still runs the cleanup below
    try:
        if args.parent_pid is not None:
            die_with_parent(args.parent_pid)
        return _serve(args)
    finally:
        # The parent removes its folder when it stops us; when it died instead (kill -9), nobody else will.
        folder = Path(args.model)
        orphaned = args.parent_pid is not None and os.getppid() != args.parent_pid
        if args.remove_on_exit and orphaned and folder.is_dir() and folder.name.startswith(SCRATCH_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s", folder)


def _exit_now(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _serve(args: argparse.Namespace) -> int:
    with model_folder(args.model) as folder:
        try:
            server = create_server(folder, args.host, args.port, args.execution_parameters)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
            return EXIT_ADDRESS_IN_USE if exc.errno == errno.EADDRINUSE else 1
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        if args.parent_pid is not None:
            threading.Thread(target=_watch_parent, args=(args.parent_pid, server), daemon=True).start()
        log.info("listening on %s (SAGEMAKER_BATCH=%s)", server.url, os.environ.get("SAGEMAKER_BATCH", "false"))

        def load_or_stop() -> None:
            server.load()
            if server.load_error is not None:
                server.shutdown()

        threading.Thread(target=load_or_stop, daemon=True).start()
        try:
            server.serve_forever(poll_interval=0.1)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        log.info("stopped")
        return 1 if server.load_error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
