"""Models stored in the database (general_settings.store_model_in_db): checked, stored, served.

ModelStore writes and reads the rows (secret parameter values encrypted, gateway/infra/secrets.py),
checking every entry as the config file's are (the same schema, numbers and provider build), so a
model the file would refuse is refused with a 400 naming the field and never stored. ModelSync keeps
a worker's router serving the file's models plus the database's: a change raises a counter (shared
memory for the instance's workers, Redis for other instances; gateway/infra/changes.py) and a row in
the database; a worker that sees either move reloads the rows and rebuilds its groups.
"""

import logging
import os
import threading
import time
import uuid

from gateway import errors
from gateway import providers
from gateway.config.parse import env_references
from gateway.config.parse import resolve_env
from gateway.config.settings import DeploymentConfig
from gateway.config.settings import check_deployment
from gateway.errors import ConfigError
from gateway.infra.changes import ChangeCounter
from gateway.infra.secrets import SecretBox
from gateway.infra.secrets import SecretError
from gateway.infra.secrets import is_secret
from gateway.infra.secrets import salt_key
from gateway.routing.balancer import Deployment

log = logging.getLogger("gateway.routing.dbmodels")

COUNT_NAME = "models"  # gateway_change_counts row, and (as REDIS_NAME) the Redis counter
REDIS_NAME = "models-changed"
REMOTE_CHECK_SECONDS = 0.5  # with Redis: how often a worker reads the instances' count
POLL_SECONDS = 2.0  # without Redis: how often a worker reads the database's count
RETRY_SECONDS = 2.0  # after a failed reload (database down): serve what is loaded, try again after this
ADMIN_NAME = "default_user_id"  # created_by for the master key (LiteLLM's name for the proxy admin)
MAX_ID = 255


def _field_error(exc, index):
    """A ConfigError of a checked entry as a 400 naming its first field (without `model_list[i].`)."""
    lines = [line.replace(f"model_list[{index}].", "") for line in str(exc).splitlines()]
    param = lines[0].partition(":")[0] if lines else None
    return errors.BadRequestError("; ".join(lines), param=param, code="invalid_model")


def public_params(params):
    """litellm_params without a secret value (for answers): keys, tokens, credentials, headers."""
    return {name: value for name, value in params.items() if not is_secret(name, value)}


class ModelStore:
    """The rows of gateway_models over a worker's database (`db`: a callable giving the Database)."""

    def __init__(self, db, master_key, environ=None):
        self.db = db
        salt = salt_key(master_key) if environ is None else salt_key(master_key, environ)
        self.box = SecretBox(salt)

    # -- checks ---------------------------------------------------------------------------------

    def check(self, entry, index=0):
        """A DeploymentConfig for one entry checked as the config file's are, or a 400 naming the field.
        `os.environ/` references are resolved to check the entry; the row keeps the reference."""
        try:
            config = check_deployment(entry, index)
            Deployment(providers.build(config))  # the provider exists, the model string and prices hold
        except ConfigError as exc:
            raise _field_error(exc, index) from None
        model_id = (entry.get("model_info") or {}).get("id")
        if model_id is not None and (not isinstance(model_id, str) or not 0 < len(model_id) <= MAX_ID):
            raise errors.BadRequestError(f"model_info.id: must be a text of 1 to {MAX_ID} characters.",
                                         param="model_info.id", code="invalid_model")
        return config

    # -- writes ---------------------------------------------------------------------------------

    def add(self, entry, by, taken=()):
        """Store a checked entry; its model_info.id is the one given (unless `taken` or stored) or a
        new one. The row as stored (secrets encrypted)."""
        from gateway.storage.models import StoredModel
        self.check(entry)
        info = dict(entry.get("model_info") or {})
        model_id = info.pop("id", None) or str(uuid.uuid4())
        info.pop("db_model", None)
        with self.db().session() as session:
            if model_id in taken or session.get(StoredModel, model_id) is not None:
                raise errors.BadRequestError(f"model_info.id: a model with id `{model_id[:MAX_ID]}` exists already.",
                                             param="model_info.id", code="model_exists")
            row = StoredModel(id=model_id, model_name=entry["model_name"],
                              litellm_params=self.box.seal(entry["litellm_params"]), model_info=info,
                              created_by=by, updated_by=by)
            session.add(row)
            self._count(session)
        return row

    def update(self, model_id, patch, by):
        """Merge `patch` ({model_name, litellm_params, model_info}; a null value removes a parameter)
        into a stored model, check the result as /model/new does, and store it. The row, or 404."""
        from gateway.storage.models import StoredModel
        with self.db().session() as session:
            row = session.get(StoredModel, model_id, with_for_update=True)
            if row is None:
                raise errors.NotFoundError(f"No database model has id `{model_id[:MAX_ID]}`.", param="id",
                                           code="model_not_found")
            try:
                params = self.box.open(row.litellm_params)
            except SecretError:
                raise errors.BadRequestError(
                    f"The stored secrets of model `{model_id}` cannot be decrypted with this salt key; "
                    "delete it and add it again.", param="id", code="undecryptable_model") from None
            params = _merged(params, patch.get("litellm_params"))
            info = _merged(row.model_info, patch.get("model_info"))
            info.pop("id", None)
            info.pop("db_model", None)
            name = patch.get("model_name") if patch.get("model_name") is not None else row.model_name
            self.check({"model_name": name, "litellm_params": params, "model_info": info})
            row.model_name, row.litellm_params, row.model_info = name, self.box.seal(params), info
            row.updated_by = by
            self._count(session)
        return row

    def delete(self, model_id):
        """Remove a stored model; 404 when there is none with that id."""
        from gateway.storage.models import StoredModel
        with self.db().session() as session:
            row = session.get(StoredModel, model_id)
            if row is None:
                raise errors.NotFoundError(f"No database model has id `{model_id[:MAX_ID]}`.", param="id",
                                           code="model_not_found")
            session.delete(row)
            self._count(session)

    @staticmethod
    def _count(session):
        """Raise the models' change count in the writing transaction (instances without Redis poll it)."""
        from sqlalchemy import update

        from gateway.storage.models import ChangeCount
        session.flush()
        session.execute(update(ChangeCount).where(ChangeCount.name == COUNT_NAME)
                        .values(count=ChangeCount.count + 1))

    # -- reads ----------------------------------------------------------------------------------

    def version(self):
        """The models' change count in the database (one indexed row)."""
        from sqlalchemy import select

        from gateway.storage.models import ChangeCount
        with self.db().session() as session:
            return session.execute(select(ChangeCount.count).where(ChangeCount.name == COUNT_NAME)).scalar()

    def load(self, first_index=0):
        """(version, [DeploymentConfig]) of every stored model that can be served; a model whose
        secrets cannot be decrypted (the salt key changed) or whose `os.environ/` variable is gone is
        skipped with a log line naming its id (never a value)."""
        from sqlalchemy import select

        from gateway.storage.models import ChangeCount
        from gateway.storage.models import StoredModel
        with self.db().session() as session:
            version = session.execute(select(ChangeCount.count).where(ChangeCount.name == COUNT_NAME)).scalar()
            rows = session.execute(select(StoredModel).order_by(StoredModel.created_at, StoredModel.id)).scalars()
            rows = list(rows)
        configs = []
        for row in rows:
            try:
                stored = self.box.open(row.litellm_params)
                params = resolve_env(stored)
            except SecretError:
                log.warning("database model %s is not served: its secrets cannot be decrypted with this salt "
                            "key (GATEWAY_SALT_KEY / LITELLM_SALT_KEY changed?)", row.id)
                continue
            except ConfigError as exc:
                log.warning("database model %s is not served: %s", row.id, exc)
                continue
            configs.append(DeploymentConfig(model_name=row.model_name, params=params,
                                            model_info={**(row.model_info or {}), "id": row.id, "db_model": True},
                                            index=first_index + len(configs),
                                            env_refs=frozenset(("litellm_params",) + path
                                                               for path in env_references(stored))))
        return version, configs


def _merged(stored, patch):
    """A mapping with `patch` laid over `stored`; a null value in the patch removes that entry."""
    merged = dict(stored or {})
    for name, value in (patch or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def answer_row(row):
    """A stored model in LiteLLM's answer shape (its model table row), without any secret value."""
    def stamp(when):
        return when.isoformat() if when is not None else None
    return {"model_id": row.id, "model_name": row.model_name,
            "litellm_params": public_params(row.litellm_params or {}),
            "model_info": {**(row.model_info or {}), "id": row.id, "db_model": True},
            "created_at": stamp(row.created_at), "created_by": row.created_by,
            "updated_at": stamp(row.updated_at), "updated_by": row.updated_by}


class ModelSync:
    """Keeps one worker's router serving the config file's models and the database's.

    `sync()` runs before every call: one read of the shared change counter (and, with Redis, one GET
    a second amortized over the calls; without Redis, one database read every POLL_SECONDS). A
    worker loads the database's models before its first call (not at import: a forked worker opens
    its own connections)."""

    def __init__(self, router, store, base_configs):
        self.router = router
        self.store = store
        self.base = tuple(base_configs)
        self.changes = ChangeCounter(router.state, REMOTE_CHECK_SECONDS, suffix=".models", redis_name=REDIS_NAME,
                                     what="model")
        self.poll = not self.changes.shared_remotely
        self._seen = None  # the counter when the loaded rows were read (None: never loaded)
        self._version = None  # the database's count of those rows
        self._next_poll = 0.0
        self._retry_at = 0.0
        self._lock = threading.Lock()  # gevent's under monkey patching: one reload at a time

    def sync(self):
        """Reload when a change was announced since the last load (or, polling, the database moved)."""
        now = time.monotonic()
        seen = self.changes.count(now)
        # Redis down: other instances' changes reach this one only through the database's count.
        poll = self.poll or self.changes.remote_down
        if seen == self._seen and not (poll and now >= self._next_poll):
            return
        if now < self._retry_at:
            return
        with self._lock:
            if seen == self._seen and poll and now >= self._next_poll:
                self._poll(now)
            elif seen != self._seen:
                self._reload(seen, now)

    def _poll(self, now):
        self._next_poll = now + POLL_SECONDS
        try:
            version = self.store.version()
        except Exception as exc:  # noqa: BLE001  (serve what is loaded; try again at the next poll)
            log.warning("cannot read the database models' change count (%s)", type(exc).__name__)
            return
        if version != self._version:
            self._reload(self._seen, now)

    def _reload(self, seen, now):
        try:
            version, configs = self.store.load(first_index=len(self.base))
        except Exception as exc:  # noqa: BLE001  (database down: keep serving the models loaded)
            self._retry_at = now + RETRY_SECONDS
            log.warning("cannot load the database models (%s); serving the models loaded before, trying "
                        "again in %.0f s", type(exc).__name__, RETRY_SECONDS)
            return
        self.router.reload(self.base + tuple(configs))
        self._seen, self._version, self._next_poll = seen, version, now + POLL_SECONDS
        log.info("worker %d serves %d database model(s) (change %s)", os.getpid(), len(configs), version)

    def announce(self):
        """After a committed change: this worker reloads at its next call, every other one too."""
        self.changes.announce()
