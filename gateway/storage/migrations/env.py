"""alembic environment: migrations run on the connection Database.migrate() hands over."""

from alembic import context

from gateway.storage.models import Base

connection = context.config.attributes["connection"]
# Our own version table: the database may be shared with other apps (a LiteLLM proxy, say).
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  version_table="gateway_alembic_version")
with context.begin_transaction():
    context.run_migrations()
