"""Which versions of which models are served: polling, loading, unloading, states, handles.

Like TF Serving's file-system source + availability-preserving manager:

- a model's versions are the numeric folders under its base path (`00000123` is version 123, loaded
  from that folder); its version policy (latest N by default) picks the ones to serve;
- a new version loads while the old one keeps answering; the old one is unloaded only after a new
  one is AVAILABLE (or when no version is wanted any more), and only after its requests finish;
- a failed load leaves the version in END with the error, visible in GetModelStatus; it is retried
  only when the folder's files change (an export still being written, then completed);
- `reconfigure` applies a re-read model config: added models load, removed ones unload, policies
  and labels change in place. As in TF Serving, a version already loaded stays loaded when only
  the base path changes (versions are known by name and number).
- version labels follow TF Serving's ServerCore: a config's labels are checked before anything
  else of it is applied, and each must name an AVAILABLE version; with
  `allow_version_labels_for_unavailable_models`, a label that is new (or keeps its version) may
  name one that is not AVAILABLE yet, but moving an existing label always needs its new version
  AVAILABLE. A config whose labels fail the check is refused whole (FAILED_PRECONDITION): the
  models, versions and labels served stay as they were. So a label moves to a new version in two
  steps: a config that loads the version, then, once it is AVAILABLE, one that moves the label.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from model_server.config_files import ModelConfig, unavailable_label_message
from model_server.errors import Code, FailedPrecondition, InvalidArgument, NotFound, ServingError
from model_server.servable import Servable

log = logging.getLogger(__name__)

LoadFn = Callable[[str, int, Path], Servable]


class State(enum.IntEnum):
    """ModelVersionStatus.State."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error_code: Code = Code.OK
    error_message: str = ""


@dataclass
class _Version:
    number: int
    state: State = State.START
    servable: Servable | None = None
    error: ServingError | None = None
    fingerprint: tuple[object, ...] = ()
    refs: int = 0


@dataclass(frozen=True)
class _OnDisk:
    folder: Path  # the folder's own name: `00000123` for version 123
    fingerprint: tuple[object, ...]


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, _Version] = field(default_factory=dict)
    last_warning: str = ""


class ModelManager:
    def __init__(
        self,
        models: Sequence[ModelConfig],
        load: LoadFn,
        on_change: Callable[[], None] = lambda: None,
        allow_labels_for_unavailable: bool = False,
    ) -> None:
        self._models = {m.name: _Model(m) for m in models}
        self._allow_labels_for_unavailable = allow_labels_for_unavailable
        # The labels served: (model, label) -> version. Taken from the first config as written (the
        # settings refuse labels there unless they may name versions not yet AVAILABLE), then only
        # from configs that pass `_checked_labels`.
        self._labels = {(m.name, label): v for m in models for label, v in m.version_labels.items()}
        self._load = load
        self._on_change = on_change
        self._cv = threading.Condition()
        self._poll_lock = threading.Lock()
        self._closed = False

    # --- configuration -----------------------------------------------------------------------

    def configs(self) -> tuple[ModelConfig, ...]:
        with self._cv:
            return tuple(m.config for m in self._models.values())

    def reconfigure(self, models: Sequence[ModelConfig]) -> None:
        """Serve exactly `models` from now on: load added ones, unload removed ones, and take the
        others' new policies and labels (applied by the poll that follows, run here)."""
        with self._poll_lock:
            if self._closed:
                return
            wanted = {m.name: m for m in models}
            with self._cv:
                # Labels first, as TF Serving does: a config with a bad label changes nothing.
                self._labels = self._checked_labels(models)
                removed = [m for name, m in self._models.items() if name not in wanted]
                kept: dict[str, _Model] = {}
                for name, config in wanted.items():
                    model = self._models.get(name)
                    if model is None:
                        model = _Model(config)
                    else:
                        model.config = config
                    kept[name] = model
                # Requests for a removed model get NOT_FOUND at once; its calls in flight finish.
                self._models = kept
            self._notify()
            for model in removed:
                log.info("model %s: removed from the model config", model.config.name)
                for version in list(model.versions.values()):
                    self._unload(model, version)
        self.poll()

    def _checked_labels(self, models: Sequence[ModelConfig]) -> dict[tuple[str, str], int]:
        """The label map a new config asks for, if TF Serving would accept it (ServerCore's
        UpdateModelVersionLabelMap); FailedPrecondition naming the first label it would refuse."""
        labels: dict[tuple[str, str], int] = {}
        for config in models:
            model = self._models.get(config.name)
            for label, number in sorted(config.version_labels.items()):
                current = self._labels.get((config.name, label))
                may_be_unavailable = self._allow_labels_for_unavailable and current in (None, number)
                version = model.versions.get(number) if model is not None else None
                if not may_be_unavailable and (version is None or version.state != State.AVAILABLE):
                    raise FailedPrecondition(unavailable_label_message(config.name, number))
                labels[(config.name, label)] = number
        return labels

    # --- polling -----------------------------------------------------------------------------

    def poll(self) -> None:
        """One look at every model's base path: load wanted versions, unload unwanted ones."""
        with self._poll_lock:
            with self._cv:
                models = list(self._models.values())
            for model in models:
                if self._closed:
                    return
                self._poll_model(model)

    def run_polling(self, interval: float, stop: threading.Event) -> None:
        """Poll now, then every `interval` seconds until `stop` (interval 0: only now)."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # a poller that dies silently would freeze the served versions
                log.exception("polling for model versions failed")
            if interval <= 0 or stop.wait(interval):
                return

    def _poll_model(self, model: _Model) -> None:
        name = model.config.name
        on_disk, warning = _versions_on_disk(model.config.base_path)
        if warning and warning != model.last_warning:
            log.warning("model %s: %s", name, warning)
        model.last_warning = warning
        wanted = model.config.policy.choose(set(on_disk))
        for number in sorted(wanted, reverse=True):
            found = on_disk[number]
            with self._cv:
                current = model.versions.get(number)
                if current is not None and not _should_load_again(current, found.fingerprint):
                    continue
                model.versions[number] = _Version(number, State.LOADING, fingerprint=found.fingerprint)
            self._notify()
            self._load_version(model, number, found)
        with self._cv:
            available_wanted = any(
                v.state == State.AVAILABLE for n, v in model.versions.items() if n in wanted
            )
            # Availability first: an old version stays until a wanted one serves, unless none is wanted.
            doomed = [
                v for n, v in model.versions.items()
                if n not in wanted and v.state == State.AVAILABLE and (available_wanted or not wanted)
            ]
        for version in doomed:
            self._unload(model, version)

    def _load_version(self, model: _Model, number: int, found: _OnDisk) -> None:
        name = model.config.name
        path, fingerprint = found.folder, found.fingerprint
        log.info("model %s version %d: loading from %s", name, number, path)
        try:
            servable = self._load(name, number, path)
        except ServingError as e:
            log.error("model %s version %d: failed to load: %s", name, number, e.message)
            with self._cv:
                model.versions[number] = _Version(number, State.END, error=e, fingerprint=fingerprint)
            self._notify()
            return
        except Exception as e:  # the loader's own bug must not stop the poller
            log.exception("model %s version %d: failed to load", name, number)
            with self._cv:
                model.versions[number] = _Version(
                    number, State.END, error=ServingError(str(e), Code.UNKNOWN), fingerprint=fingerprint
                )
            self._notify()
            return
        with self._cv:
            if self._closed:
                servable.close()
                return
            model.versions[number] = _Version(
                number, State.AVAILABLE, servable=servable, fingerprint=fingerprint
            )
        log.info("model %s version %d: AVAILABLE", name, number)
        self._notify()

    def _unload(self, model: _Model, version: _Version) -> None:
        with self._cv:
            if version.state != State.AVAILABLE:
                return
            version.state = State.UNLOADING
        self._notify()
        log.info("model %s version %d: unloading (waiting for %d requests)",
                 model.config.name, version.number, version.refs)
        with self._cv:
            self._cv.wait_for(lambda: version.refs == 0)
            servable, version.servable = version.servable, None
        if servable is not None:
            servable.close()
        with self._cv:
            version.state = State.END
        log.info("model %s version %d: unloaded", model.config.name, version.number)
        self._notify()

    def _notify(self) -> None:
        try:
            self._on_change()
        except Exception:  # a listener (health service) failing must not break loading
            log.exception("model state listener failed")

    # --- requests ------------------------------------------------------------------------------

    @contextmanager
    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[Servable]:
        """The servable a request names, held until the block ends (unloading waits for it)."""
        with self._cv:
            found = self._find(name, version, label)
            found.refs += 1
            assert found.servable is not None
            servable = found.servable
        try:
            yield servable
        finally:
            with self._cv:
                found.refs -= 1
                if found.refs == 0:
                    self._cv.notify_all()

    def _find(self, name: str, version: int | None, label: str | None) -> _Version:
        model = self._models.get(name)
        if label is not None:
            number = self._labels.get((name, label)) if model is not None else None
            if number is None:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            version = number
        if version is not None:
            entry = model.versions.get(version) if model is not None else None
            if entry is None or entry.state != State.AVAILABLE:
                raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            return entry
        versions = [] if model is None else list(model.versions.values())
        available = [v for v in versions if v.state == State.AVAILABLE]
        if not available:
            raise NotFound(f"Servable not found for request: Latest({name})")
        return max(available, key=lambda v: v.number)

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: every known version of a model, or one; TF Serving's NOT_FOUND otherwise."""
        with self._cv:
            model = self._models.get(name)
            versions = {} if model is None else dict(model.versions)
            if version is not None:
                if version not in versions:
                    raise NotFound(f"Could not find version {version} of model {name}")
                chosen = [versions[version]]
            else:
                if not versions:
                    raise NotFound(f"Could not find any versions of model {name}")
                chosen = [versions[n] for n in sorted(versions)]
            return [
                VersionStatus(
                    v.number, v.state,
                    v.error.code if v.error else Code.OK,
                    v.error.message if v.error else "",
                )
                for v in chosen
            ]

    def ready(self) -> bool:
        """Every configured model has an AVAILABLE version."""
        with self._cv:
            return all(
                any(v.state == State.AVAILABLE for v in m.versions.values()) for m in self._models.values()
            )

    def served(self) -> list[tuple[str, int]]:
        """(model, highest AVAILABLE version) for each model that has one."""
        with self._cv:
            out = []
            for model in self._models.values():
                numbers = [n for n, v in model.versions.items() if v.state == State.AVAILABLE]
                if numbers:
                    out.append((model.config.name, max(numbers)))
            return out

    def flush_batches(self) -> None:
        """Tell every loaded version's batchers that no more requests are coming."""
        with self._cv:
            servables = [v.servable for m in self._models.values() for v in m.versions.values() if v.servable]
        for servable in servables:
            servable.flush()

    def close(self) -> None:
        """Unload everything (after requests in flight finish); no more loads."""
        with self._poll_lock:  # wait for a load in progress
            self._closed = True
            for model in self._models.values():
                for version in list(model.versions.values()):
                    self._unload(model, version)


def _should_load_again(version: _Version, fingerprint: tuple[object, ...]) -> bool:
    """A wanted version already known: load it again if it was unloaded (wanted again after a
    rollback), or if it failed and its files have changed since."""
    if version.state != State.END:
        return False
    return version.error is None or version.fingerprint != fingerprint


# TF Serving parses version folder names as int64.
_MAX_VERSION = 2**63 - 1


def _versions_on_disk(base_path: Path) -> tuple[dict[int, _OnDisk], str]:
    """Numeric version folders under `base_path` with a fingerprint of their files, and a warning."""
    try:
        entries = list(base_path.iterdir())
    except FileNotFoundError:
        return {}, f"base path {base_path} does not exist"
    except OSError as e:
        return {}, f"cannot list base path {base_path}: {e.strerror}"
    found: dict[int, _OnDisk] = {}
    duplicates: list[str] = []
    # Sorted, so that of two folders for one version (`123` and `00000123`) the choice is stable.
    for entry in sorted(entries):
        # ASCII digits only: str.isdigit() also takes other scripts' digits, TF Serving does not.
        if not (entry.name.isascii() and entry.name.isdigit()) or not entry.is_dir():
            continue
        number = int(entry.name)
        if number > _MAX_VERSION:
            continue
        if number in found:
            duplicates.append(f"{entry.name} (version {number} is served from {found[number].folder.name})")
            continue
        found[number] = _OnDisk(entry, _fingerprint(entry))
    if not found:
        return found, f"no versions found under base path {base_path}"
    return found, f"ignoring version folders {', '.join(duplicates)}" if duplicates else ""


def _fingerprint(folder: Path) -> tuple[object, ...]:
    # Names, sizes and mtimes of the files TF loads: a changed export gets another try.
    parts: list[object] = []
    for sub in (folder, folder / "variables", folder / "assets.extra"):
        try:
            for entry in sorted(sub.iterdir()):
                stat = entry.stat()
                parts.append((entry.name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            continue
    return tuple(parts)
