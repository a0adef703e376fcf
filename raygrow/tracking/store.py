"""Which MLflow store a command uses, and whether it can be used, checked before any compute.

MLflow is imported only inside `_check_other` (importing it costs seconds; the sqlite and http
checks, which every search runs first, do without it).
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from raygrow.errors import ConfigError

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
_BARE_SCHEMES = ("databricks", "databricks-uc", "uc")  # MLflow URIs without "://"


def resolve_tracking_uri(flag: str | None, default: str | None) -> str | None:
    """The store a CLI uses: `--tracking-uri`, else `$MLFLOW_TRACKING_URI`, else `default`."""
    if flag:
        return flag
    return os.environ.get(TRACKING_URI_ENV) or default


def tracking_uri_origin(flag: str | None) -> str | None:
    """Where `resolve_tracking_uri` took the URI from, for error messages (None: the flag or
    the default)."""
    if not flag and os.environ.get(TRACKING_URI_ENV):
        return f"set by ${TRACKING_URI_ENV}"
    return None


def default_tracking_uri(out_dir: str | Path) -> str:
    """The default store: `sqlite:////abs/<out_dir>/mlflow.db` (absolute: Tune changes cwd)."""
    return "sqlite:///" + str(Path(out_dir).expanduser().resolve() / "mlflow.db")


def sqlite_path(uri: str) -> Path | None:
    """Database file of a `sqlite:///...` URI (None for other schemes)."""
    if not uri.startswith("sqlite:"):
        return None
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        raise ConfigError(
            f"tracking URI {uri!r} is not a sqlite file; use sqlite:////abs/path/mlflow.db"
        )
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def check_reachable(uri: str, timeout_s: float = 5.0, *, origin: str | None = None) -> None:
    """Raise a one-line ConfigError if the store cannot be used; call before any compute.

    sqlite: the URI must be absolute and its folder writable (probed with a real temporary
    file; a missing folder is checked at its nearest existing parent, since the search
    creates it). http(s): the server must answer `/health` within `timeout_s`. Any other
    scheme must be one MLflow can build a client for (`foo://bar` is not). `origin` (e.g.
    "set by $MLFLOW_TRACKING_URI") is added to the message in parentheses.
    """
    try:
        _check_uri(uri, timeout_s)
    except ConfigError as exc:
        if origin is None:
            raise
        raise ConfigError(f"{exc} ({origin})") from None


def _check_uri(uri: str, timeout_s: float) -> None:
    if uri in _BARE_SCHEMES or uri.startswith("databricks"):
        _check_other(uri)
        return
    if uri.startswith("file:") or "://" not in uri and not uri.startswith("sqlite:"):
        raise ConfigError(
            f"tracking URI {uri!r} is a file store, which MLflow 3 refuses; use "
            "sqlite:////abs/path/mlflow.db or http://host:port"
        )
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite(uri, db)
    elif uri.startswith(("http://", "https://")):
        _check_http(uri, timeout_s)
    else:  # postgresql, mysql, ...: MLflow builds (and for SQL, connects to) its store
        _check_other(uri)


def _check_sqlite(uri: str, db: Path) -> None:
    if not db.is_absolute():
        raise ConfigError(
            f"tracking URI {uri!r} is relative (Tune changes each trial's working directory); "
            f"use an absolute one: sqlite:///{db.resolve()}"
        )
    if db.exists():
        if db.is_dir():
            raise ConfigError(f"tracking database {db} is a folder; point --tracking-uri at a file")
        with db.open("rb") as fh:
            head = fh.read(16)
        if head and head != b"SQLite format 3\x00":
            raise ConfigError(f"{db} is not a SQLite database; choose another --tracking-uri")
    folder = db.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(
            f"cannot create the tracking database {db}: {folder} is a file, not a folder; "
            "choose another --tracking-uri or --out"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".raygrow-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write the tracking database in {folder} ({exc.strerror}); choose a writable "
            "--out or --tracking-uri sqlite:////writable/path/mlflow.db"
        ) from None


def _check_other(uri: str) -> None:
    """A URI that is neither sqlite nor http(s): MLflow must be able to build a client for it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    fix = "use --tracking-uri sqlite:////abs/path/mlflow.db or http://host:port"
    try:
        MlflowClient(tracking_uri=uri)
    except UnsupportedModelRegistryStoreURIException as exc:
        scheme = uri.split("://", 1)[0] if "://" in uri else uri.split(":", 1)[0]
        known = ", ".join(s for s in exc.supported_uri_schemes if s and s != "file")
        raise ConfigError(
            f"tracking URI {uri!r}: MLflow has no store for the scheme {scheme!r} (it knows "
            f"{known}); {fix}"
        ) from None
    except (MlflowException, ImportError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(f"MLflow cannot use tracking URI {uri!r} ({first}); {fix}") from None


def _check_http(uri: str, timeout_s: float) -> None:
    base = uri.rstrip("/")
    deadline = time.monotonic() + timeout_s
    reason = "no answer"
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with urllib.request.urlopen(base + path, timeout=left) as resp:
                if resp.status == 200:
                    return
                reason = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            if exc.code in (401, 403):  # answers, needs credentials: MLflow will say so
                return
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
            break  # connection refused / timeout: the second path will not do better
    raise ConfigError(
        f"MLflow server {uri} did not answer within {timeout_s:g}s ({reason}); start it with "
        "`mlflow server --backend-store-uri sqlite:////abs/path/mlflow.db --host 127.0.0.1 "
        "--port 5000` or use --tracking-uri sqlite:////abs/path/mlflow.db"
    )
