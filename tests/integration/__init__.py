"""The gateway over HTTP: real gunicorn processes, real openai SDK, fake upstreams."""
